"""The results table: its schema and typed rows, a job's folder on disk, collecting a sweep's jobs and
reading stored tables of any format version. It imports nothing else of convbench: the measuring code
writes through it and the report reads through it."""
