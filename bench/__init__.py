"""`make bench`: the service measured against the storage floor.

Run as ``python -m bench [--sizes 1000 10000]``. For each size N it

1. starts (or reuses) its own PostgreSQL and SeaweedFS under ``.bench/`` — or uses
   ``DATABASE_URL`` and ``S3_ENDPOINT_URL`` when both are set — and loads N + 1 %
   generated conversations once (cached by seed: a later run loads only what is missing);
2. starts the service as a separate process (``python -m trainingfiles_server``) with
   ``MAX_OBJECT_BYTES`` raised to 4 GiB, because the training file of 10,000 realistic
   conversations is far above the default 50 MiB;
3. measures Create of all N (wall time, time to first progress message, server peak RSS
   above idle, server CPU), Add of 1 % more, then Get and List with 32 concurrent callers,
   then ExportTrainingFile of openai_chat and of parquet from that file; and, on a fresh
   server, a Create of the same N with every trainer format and a 10 % validation split;
4. measures the floor: plain aiobotocore GETs of every enriched object and PUTs of two
   objects of the sizes the service wrote, no parsing, no database, best of a few
   concurrency settings; and a "lean" floor that GETs the way the service does
   (presigned URLs on a plain HTTP session), also with the objects of the all-formats
   Create.

Modules: `stack` (the servers), `dataset` (the cached conversations), `server` (the
service process), `workload` (Create, Add, Export, reads over gRPC), `floor`, `procstat`
(memory and CPU from ``/proc``), `report` (targets, tables, chart), `profiles` (a summary
of a ``--profile`` recording) and `cli`.

Results go to ``bench/results/<run>.json``; ``latest.md`` and ``latest.png`` show the
newest figures of each N (``python -m bench --report-only`` redraws them). Runs of the
code before the performance work are in ``bench/results/baseline/``. ``docs/bench.md``
explains how to read them.
"""
