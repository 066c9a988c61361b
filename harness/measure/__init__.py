"""Measuring one job: seeded cases, correctness checks, timing, memory, the device and its environment,
and the job loop that turns them into rows. It may import `harness.config` and `harness.table`, never
`harness.report`."""
