"""`python -m hyperstudy_bulk.simulator`."""

from hyperstudy_bulk.simulator.cli import main

raise SystemExit(main())
