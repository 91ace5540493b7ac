//! runtime.v1 declares `Timings`, `ResourceUsage` and `Tool` itself rather than importing
//! megavisor.v1's: a `megavisor.v1` import would make every Python client's generated stubs
//! a `megavisor` package, which the installed `megavisor` package shadows. They must stay the
//! same messages on the wire, field by field, and this test holds them to it.

use prost_reflect::{DescriptorPool, MessageDescriptor};

fn pool() -> DescriptorPool {
    let files = ["runtime/v1/driver.proto", "megavisor/v1/wire.proto"];
    let descriptors = protox::compile(files, ["../proto"]).expect("the .proto files compile");
    DescriptorPool::from_file_descriptor_set(descriptors).expect("a descriptor pool")
}

fn fields(message: &MessageDescriptor) -> Vec<(u32, String, String, bool)> {
    message
        .fields()
        .map(|f| {
            let kind = format!("{:?}", f.kind())
                .split('(')
                .next()
                .unwrap_or_default()
                .to_owned();
            (f.number(), f.name().to_owned(), kind, f.is_list())
        })
        .collect()
}

#[test]
fn runtime_v1_messages_are_megavisor_v1_messages_on_the_wire() {
    let pool = pool();
    for name in ["Timings", "ResourceUsage", "Tool"] {
        let runtime = pool
            .get_message_by_name(&format!("runtime.v1.{name}"))
            .expect(name);
        let wire = pool
            .get_message_by_name(&format!("megavisor.v1.{name}"))
            .expect(name);
        assert_eq!(
            fields(&runtime),
            fields(&wire),
            "{name} differs between the two APIs"
        );
    }
}
