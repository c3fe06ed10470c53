"""``python -m smartpretrain.data.synthetic --format av2 --root DIR ...`` (see :func:`cli.main`)."""

from smartpretrain.data.synthetic.cli import main

raise SystemExit(main())
