"""Benchmarks against the hardware's limit (issue 9): ``python -m camsim.bench``.

Measures, on the machine it runs on, the fp32 GEMM ceiling and camsim's hot paths —
Phase A training / inference (docs/method.md, "Learning Phase A"), the data layer (patch
extraction, cached-patch loader, JPEG decoding, the simulator), Phase B head training,
pair scoring and splicing localisation (docs/method.md, "Learning Phase B", "Splicing
demonstration") — prints a table with the achieved share of the ceiling and the issue's
targets, and writes everything to JSON. ``benchmarks/README.md`` explains each row;
``python -m camsim.bench.synth`` times the simulator alone (CPU per scene / frame).

Modules, top down: ``cli`` (options, report assembly) → ``plan`` (which rows) →
``runner`` (each row in a fresh process) → the rows (``ceiling``, ``rows_model``,
``rows_data``, ``rows_similarity``, ``synth``) → ``common`` (timing, memory, inputs);
``report`` turns results into shares of the ceiling, targets and the table.

Conventions (also written into the JSON's ``meta``):

* throughput = items per second of the **fastest** timed call (best of several, like the
  GEMM ceiling, so both sides of a ratio are measured the same way; the median is in the
  JSON too);
* FLOPs: ``count_flops`` (torch FlopCounterMode, 2 per multiply-add, conv/matmul only) of
  one forward pass; a training step counts 3x the forward FLOPs (backward ~ 2x forward);
* peak memory: every row runs in a fresh subprocess (``python -m camsim.bench.runner``) and reports
  that process's peak resident set size (``ru_maxrss``) plus its RSS when the row started
  (imports only) and the peak of its own child processes (loader / extraction workers);
  Phase A rows read it before building the fp64 reference models of their correctness check.
  ``--in-process`` runs the rows in this process instead and resets the kernel's
  high-water mark (``/proc/self/clear_refs``) before each row.
"""
