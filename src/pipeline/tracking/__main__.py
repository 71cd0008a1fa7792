"""``python -m pipeline.tracking ui --config config/config.yaml`` (see :mod:`pipeline.tracking.cli`)."""

from pipeline.tracking.cli import main

main()
