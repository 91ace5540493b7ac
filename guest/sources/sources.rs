//! Empty: this package only names the C sources the guest tools are built from.
