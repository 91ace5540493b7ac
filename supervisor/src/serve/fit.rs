//! Replies cut to fit their transport. An output too big for a connection's reply limit
//! arrives with its stdout and stderr cut (their 8 KiB tails and their totals kept whole), as
//! an embedded call's output is at its output limit: the caller learns how much there was,
//! and sees its end, instead of losing the whole result.

use megavisor_wire::proto::{self, server_message};
use prost::Message;

/// Varint growth a re-encoding may add back after a cut (lengths shrink, so this is slack).
const SLACK: usize = 16;

/// `message` encoded in at most `limit` bytes.
pub fn encode_within(mut message: proto::ServerMessage, limit: usize) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let len = encoded.len();
    if len <= limit {
        return encoded;
    }
    let output = match &mut message.body {
        Some(server_message::Body::Output(output)) => Some(output),
        Some(server_message::Body::Failure(failure)) => failure.partial.as_mut(),
        _ => None,
    };
    if let Some(output) = output {
        let heads = output.stdout.len() + output.stderr.len();
        let excess = len - limit + SLACK;
        if excess <= heads {
            let keep = heads - excess;
            // An even share each, and what one does not need to the other.
            let stderr_keep = output.stderr.len().min(keep / 2);
            let stdout_keep = output.stdout.len().min(keep - stderr_keep);
            let stderr_keep = output.stderr.len().min(keep - stdout_keep);
            output.stdout.truncate(stdout_keep);
            output.stderr.truncate(stderr_keep);
            let bytes = message.encode_to_vec();
            if bytes.len() <= limit {
                return bytes;
            }
        }
    }
    proto::ServerMessage {
        id: message.id,
        body: Some(server_message::Body::Failure(proto::Failure::new(
            proto::ErrorKind::Internal,
            format!(
                "reply of {len} bytes exceeds this connection's limit of {limit} bytes even without its stdout and stderr"
            ),
        ))),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: usize, stderr: usize) -> proto::Output {
        proto::Output {
            tool: "t".into(),
            stdout: vec![b'o'; stdout],
            stderr: vec![b'e'; stderr],
            stdout_tail: vec![b'o'; 8192.min(stdout)],
            stdout_total: stdout as u64,
            stderr_total: stderr as u64,
            ..proto::Output::default()
        }
    }

    fn decoded(bytes: &[u8]) -> proto::ServerMessage {
        proto::ServerMessage::decode(bytes).unwrap()
    }

    #[test]
    fn a_reply_that_fits_is_untouched() {
        let message = proto::ServerMessage {
            id: 1,
            body: Some(server_message::Body::Output(output(100, 10))),
        };
        assert_eq!(
            encode_within(message.clone(), 1 << 20),
            message.encode_to_vec()
        );
    }

    #[test]
    fn an_output_too_big_is_cut_keeping_tails_and_totals() {
        let message = proto::ServerMessage {
            id: 7,
            body: Some(server_message::Body::Output(output(1 << 20, 1000))),
        };
        let bytes = encode_within(message, 64 << 10);
        assert!(bytes.len() <= 64 << 10);
        let Some(server_message::Body::Output(cut)) = decoded(&bytes).body else {
            panic!("still an output")
        };
        assert_eq!((cut.stdout_total, cut.stderr_total), (1 << 20, 1000));
        assert_eq!(cut.stderr.len(), 1000, "the small stream is kept whole");
        assert!(cut.stdout.len() > 40 << 10 && cut.stdout_tail.len() == 8192);
    }

    #[test]
    fn a_timed_out_calls_partial_output_is_cut_too() {
        let message = proto::ServerMessage {
            id: 3,
            body: Some(server_message::Body::Failure(proto::Failure {
                kind: proto::ErrorKind::Timeout as i32,
                message: "timeout".into(),
                partial: Some(output(1 << 20, 1 << 20)),
            })),
        };
        let bytes = encode_within(message, 100 << 10);
        let Some(server_message::Body::Failure(failure)) = decoded(&bytes).body else {
            panic!("still a failure")
        };
        assert_eq!(failure.kind, proto::ErrorKind::Timeout as i32);
        let partial = failure.partial.unwrap();
        assert!(partial.stdout.len() + partial.stderr.len() > 80 << 10);
        assert_eq!(partial.stdout_total, 1 << 20);
    }
}
