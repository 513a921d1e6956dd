"""The service around the method: the one place in pipeline/ that touches Celery, the
database and the environment.

- client.py ... ``BlendClient``: submit, start, send, wait, resume (a turn's life)
- store.py .... ``Store`` (``client.store``): every read and write of a conversation that the
  client, the chat endpoint, the pages and the CLI make, one session each
- live.py ..... a live conversation: one question at a time, from the state the store read
- broker.py ... what a waiting client sees of the broker (a restart, an outage)
- canvas.py ... a turn's Celery canvas, by task name (the only module that builds signatures)
- settings.py . the environment (``PEERBLEND_*``), read at the edges only

The pure method (everything else in pipeline/) imports nothing from here and nothing from
db/; this package may import both (tests/test_imports.py, tests/test_purity.py).
"""
