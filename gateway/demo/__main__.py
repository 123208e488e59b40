from gateway.demo.upstream import main

raise SystemExit(main())
