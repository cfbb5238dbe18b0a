"""The site server's state and logic, below the admin pages: no Flask here.

`model` (the records), `storage` (TinyDB files written atomically), and one module per area;
`docs/adr/0008-site-server.md` says how they fit.
"""
