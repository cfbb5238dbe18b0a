# No uninstall(), no audit(): removing this package has nothing to do.
def install():
    print("installing")
