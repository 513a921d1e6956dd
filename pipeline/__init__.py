"""peerblend's core: the rules of the method, pure (no Celery, torch or ORM), and service/ around it.

Where each rule of the method lives (one file each):

- who answers, who reviews, which queue ............ committee.py (config), plan.py (run: method, top_k;
  the registry of methods, VARIANTS)
- what a method declares (stage, ranking, rows) ...... method.py (the Method base: no review stage; also
  whether its rows are ballots, plan.is_ballot, and how the report labels and orders it)
- the methods, one module each ....................... peer.py (reviews, Borda or learned), pairwise.py
  (the LLM-Blender baseline: judge tasks, "max logits", its judge stage), single.py (one member)
- fusion, the finishing step (top_k > 1) ............. fusion.py (its check, queue, texts and stage)
- the prompts (generate, review, fuse, judge) ....... prompts.py; what a model consumes: backend.py
- the conversation given to the models ............. context.py (history fitted to a token budget)
- the stages every method shares (answer, review) .... stages.py; every stage's records: records.py
- a record's JSON (Celery messages, JSON columns) ... wire.py (pydantic, from the record's dataclass)
- anonymous labels, shuffles, ballot parsing ......... ballot.py (constrained ballots: ballot_grammar.py)
- Borda count and its tie-break ...................... borda.py (borda_order: production's order too)
- ranking a turn's candidates by Borda ............... aggregate.py (also: honest voters and their
  groups, voter_groups, used by weights.py and evaluation/reviewers.py too; one review per voter
  group)
- who wins a turn (rank, select or fuse, status) .... verdict.py (decide_turn, from a turn's TurnInputs)
- three words kept apart ............................. TurnRoles (who works on a turn: policy.py),
  Standings (a turn's candidates ranked: aggregate.py), decision (only the record a turn stores;
  "the learned decision" names a rule, learned.py)
- reviewer weights (uniform / online / calibrated) ... weights.py (stored_weights: live turns and rerank;
  rank correlation: correlation.py)
- the member prior (fitted, stored, read, its ballot) prior.py (the Borda count adds its ballot)
- every key of the policy store ...................... store_keys.py (p3's cycle of three: policy.P3_CYCLE)
- the learned decision (signals -> a model per bucket) learned.py (a turn's signals: signals.py;
  fitted by evaluation/learning.py)
- shortlist policies (full, p1, p2, p3, learned-route) policy.py (pure rules: who_works on a turn, its
  TurnRoles, the PolicyState), shortlist.py (applied to a store)
- a turn's token usage (every model call, metered) ... usage.py (Metered wraps the backend a task calls)

Around the method, in service/ (the one part of pipeline/ that touches Celery, the database
and the environment): client.py (BlendClient: submit, start, send, wait, resume), store.py
(Store, client.store: every read and write of a conversation that the client, the server, the
pages and the CLI make), live.py (live conversations: one question at a time), broker.py (a
waiting client notices a broker restart), canvas.py (a turn's Celery canvas by task name),
settings.py (the environment, read at the edges only). Pure, beside the method: conversation.py (the input
shape and its limits), errors.py (the error tree). The method imports nothing from service/
or db/, service/ may import both, nothing here imports workers/, and no two modules import
each other (tests/test_imports.py, tests/test_purity.py). Evaluation
lives apart: evaluation/ here (dataset loaders, token F1 and exact match, report
statistics and tables, calibration, re-ranking stored runs) and workers/evaluation/
(replay, BERTScore, plots, the rerank and calibrate commands).
"""
