# No install(): installing this package is an error.
def uninstall():
    print("uninstalling")
