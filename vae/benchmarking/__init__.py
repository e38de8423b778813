"""Benchmarks as a library (scripts/benchmark.py is their command line): timing and FLOP
accounting (`timing`), the compiled programs measured in-process (`programs`: the loop's
training chunk, vmapped groups, the evaluator and importance sampler, a matmul-only twin and
a minimal plain-JAX loop), training launched as a process (`launches`) and the three suites
whose JSON figures docs/benchmarks.md cites (`suites`: full, host loop, lean step)."""
