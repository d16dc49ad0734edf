"""``python -m pmfm.compare <multirun folder>``: the runs of a sweep side by side, without a web page
(a table sorted by ``--metric``, comparison.csv and comparison.png in the folder)."""

from pmfm.pipelines.compare import main

if __name__ == "__main__":
    main()
