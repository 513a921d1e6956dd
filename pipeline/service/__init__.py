"""The service around the method: the one place in pipeline/ that touches Celery, the
database and the environment.

- client.py ... ``BlendClient``: submit, wait, fetch, resume; live conversations' storage;
  the reads the server, the pages and the CLI make (everything that reads or writes a
  conversation goes through it)
- live.py ..... a live conversation: one question at a time, from the state the client read
- canvas.py ... a turn's Celery canvas, by task name (the only module that builds signatures)
- settings.py . the environment (``PEERBLEND_*``), read at the edges only

The pure method (everything else in pipeline/) imports nothing from here and nothing from
db/; this package may import both (tests/test_imports.py, tests/test_purity.py).
"""
