"""``python -m bench [--quick] [--only NAME]…``: run the benchmarks, print the table, append it to RESULTS.md."""

from bench.harness import main

if __name__ == "__main__":  # the guard matters: spawned load-generator processes re-import the main module
    raise SystemExit(main())
