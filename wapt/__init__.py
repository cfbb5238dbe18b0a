"""The WAPT package core: control files, versions, packages, keys and trust, indexes, resolution.

A pure library: it takes bytes, paths and typed settings, returns typed objects and raises
`wapt.errors.WaptError`. It knows nothing of the web, of TinyDB or of windows.
"""
