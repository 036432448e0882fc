"""``python -m benchmarks``: run every case and print the table."""

from benchmarks.run import main

raise SystemExit(main())
