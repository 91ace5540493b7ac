//! Every error kind, once: its wire name and what it is called, or becomes, in every
//! interface (the CLI's exit code, the gRPC status, the Python class, the Node code, the C
//! status). Every other table of kinds in the project (core's, the wire's, the CLI's, gRPC's,
//! Python's, Node's, C's) is tested against this one.

use crate::error::ErrorKind;

/// What one error kind is in each interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind.
    pub kind: ErrorKind,
    /// Its stable snake-case name, as on the wire and in JSON (`timeout`).
    pub name: &'static str,
    /// The `megavisor` CLI's exit status for it (a tool's own exit code passes through).
    pub exit_code: u8,
    /// The gRPC status code an `Execute` that fails with it returns (the canonical number:
    /// 3 `INVALID_ARGUMENT`, 7 `PERMISSION_DENIED`, ...; its name is in the trailer).
    pub grpc_code: i32,
    /// The exception class Python raises (`megavisor.Timeout`).
    pub python_class: &'static str,
    /// The `code` of the Node error (`TIMEOUT`).
    pub node_code: &'static str,
    /// The `driver_status` libdriver returns (`DRIVER_STATUS_TIMEOUT`).
    pub c_status: i32,
}

/// gRPC status codes used below (google.rpc.Code).
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

macro_rules! kinds {
    ($($kind:ident $name:literal $exit:literal $grpc:ident $node:literal $c:literal;)*) => {
        /// Every kind, in the order of [`ErrorKind`]'s variants.
        pub const KINDS: &[KindInfo] = &[$(KindInfo {
            kind: ErrorKind::$kind,
            name: $name,
            exit_code: $exit,
            grpc_code: grpc::$grpc,
            python_class: stringify!($kind),
            node_code: $node,
            c_status: $c,
        },)*];
    };
}

// Exit codes: 2 for usage, 124-127 as timeout(1) and shells use them, 134 for an abort,
// 130 for an interrupted command, and sysexits(3) (66 for input that does not exist) for the supervisor's own conditions (69
// unavailable, 75 temporary failure, 76 protocol error). The Python class is the variant's
// name.
kinds! {
//  variant      name              exit  gRPC                Node code          C
    HashMismatch "hash_mismatch"   3     PERMISSION_DENIED   "HASH_MISMATCH"    1;
    BadSignature "bad_signature"   3     PERMISSION_DENIED   "BAD_SIGNATURE"    2;
    ToolNotFound "tool_not_found"  127   NOT_FOUND           "TOOL_NOT_FOUND"   3;
    NotAllowed   "not_allowed"     126   PERMISSION_DENIED   "NOT_ALLOWED"      4;
    Timeout      "timeout"         124   DEADLINE_EXCEEDED   "TIMEOUT"          5;
    MemoryLimit  "memory_limit"    125   RESOURCE_EXHAUSTED  "MEMORY_LIMIT"     6;
    Trap         "trap"            134   ABORTED             "TRAP"             7;
    BadRequest   "bad_request"     2     INVALID_ARGUMENT    "BAD_REQUEST"      8;
    Internal     "internal"        1     INTERNAL            "INTERNAL"         9;
    Busy         "busy"            75    RESOURCE_EXHAUSTED  "BUSY"             10;
    ShuttingDown "shutting_down"   75    UNAVAILABLE         "SHUTTING_DOWN"    11;
    Cancelled    "cancelled"       130   CANCELLED           "CANCELLED"        15;
    SessionGone  "session_gone"    66    NOT_FOUND           "SESSION_GONE"     16;
    ConnectionLost "connection_lost" 69  UNAVAILABLE         "CONNECTION_LOST"  12;
    Protocol     "protocol"        76    INTERNAL            "PROTOCOL"         13;
}

impl ErrorKind {
    /// What this kind is in every interface.
    pub fn info(self) -> &'static KindInfo {
        // KINDS is in the order of the variants (its test checks).
        &KINDS[self as usize]
    }

    /// The kind named `name` (`"timeout"`), if there is one.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        KINDS
            .iter()
            .find(|info| info.name == name)
            .map(|info| info.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_once_with_codes_that_follow_its_name() {
        for (index, info) in KINDS.iter().enumerate() {
            assert_eq!(info.kind as usize, index, "{} is out of order", info.name);
            assert_eq!(info.kind.as_str(), info.name);
            assert_eq!(info.node_code, info.name.to_ascii_uppercase());
            let camel: String = info
                .name
                .split('_')
                .map(|word| word[..1].to_ascii_uppercase() + &word[1..])
                .collect();
            assert_eq!(info.python_class, camel);
            assert_eq!(ErrorKind::from_name(info.name), Some(info.kind));
        }
        let mut statuses: Vec<i32> = KINDS.iter().map(|info| info.c_status).collect();
        statuses.sort_unstable();
        statuses.dedup();
        assert_eq!(statuses.len(), KINDS.len(), "two kinds share a C status");
    }
}
