# audit() answers WAPT's status text.
def install():
    pass


def audit():
    print("auditing")
    return "WARNING"
