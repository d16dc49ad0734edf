"""``python -m pmfm.benchmark``: simulations/s of the simulator paths, the cost and the surrogates,
side by side on one device, appended to benchmarks/results.csv (``--help`` for the options)."""

from pmfm.pipelines.benchmark import main

if __name__ == "__main__":
    main()
