//! Core's kinds, the wire's and the client's are the same kinds under the same names as
//! the one table of kinds (`megavisor_client::kinds`).

use megavisor_driver::{ErrorKind, KINDS, convert};
use megavisor_wire::proto;

#[test]
fn every_core_kind_crosses_the_wire_as_itself() {
    for kind in megavisor_core::ErrorKind::ALL {
        let wire = convert::wire_kind(kind);
        assert_eq!(wire.name(), kind.as_str());
        let failure = proto::Failure::new(wire, "x");
        let client = megavisor_driver::Error::from_failure(failure).kind();
        assert_eq!(client.as_str(), kind.as_str());
        assert_eq!(ErrorKind::from_name(kind.as_str()), Some(client));
    }
}

#[test]
fn every_wire_kind_is_in_the_table() {
    let mut raw = 1;
    while let Ok(wire) = proto::ErrorKind::try_from(raw) {
        let client = megavisor_driver::Error::from_failure(proto::Failure::new(wire, "x")).kind();
        assert_eq!(client.as_str(), wire.name(), "wire kind {raw}");
        raw += 1;
    }
    assert_eq!(
        raw - 1,
        13,
        "the wire has kinds the table was not checked against"
    );
    // The kinds only a client meets are not on the wire.
    let client_only: Vec<_> = KINDS
        .iter()
        .map(|i| i.name)
        .skip(raw as usize - 1)
        .collect();
    assert_eq!(client_only, ["connection_lost", "protocol"]);
}
