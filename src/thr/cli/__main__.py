"""``python -m thr.cli COMMAND``: the same as the ``thr`` command."""

from thr.cli import main

raise SystemExit(main())
