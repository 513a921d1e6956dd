"""peerblend's pure core: the rules of the method, with no Celery, torch or ORM."""
