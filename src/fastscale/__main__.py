from fastscale.cli import main

raise SystemExit(main())
