# install is not a function.
install = 42
