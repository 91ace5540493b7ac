//! Which local users may connect, checked against `SO_PEERCRED`.

use super::connection::Peer;

/// Allowed peer uids and gids. A peer is allowed when its uid or its primary gid is listed.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl PeerPolicy {
    /// Allows the listed uids and gids; with both lists empty, only the supervisor's own uid.
    pub fn new(uids: Vec<u32>, gids: Vec<u32>) -> Self {
        if uids.is_empty() && gids.is_empty() {
            PeerPolicy {
                uids: vec![nix::unistd::geteuid().as_raw()],
                gids,
            }
        } else {
            PeerPolicy { uids, gids }
        }
    }

    /// Ok, or the reason the peer is refused.
    pub fn check(&self, peer: &Peer) -> Result<(), String> {
        if self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid) {
            return Ok(());
        }
        Err(format!(
            "peer uid {} gid {} (pid {}) is not allowed to connect; allowed uids {:?}, gids {:?} (--allow-uid, --allow-gid)",
            peer.uid, peer.gid, peer.pid, self.uids, self.gids
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            pid: 1,
            uid,
            gid,
            groups: vec![],
        }
    }

    #[test]
    fn uid_or_primary_gid_must_be_listed() {
        let policy = PeerPolicy::new(vec![1000], vec![50]);
        assert!(policy.check(&peer(1000, 1)).is_ok());
        assert!(policy.check(&peer(7, 50)).is_ok());
        let refused = policy.check(&peer(0, 0)).unwrap_err();
        assert!(
            refused.contains("uid 0") && refused.contains("[1000]"),
            "{refused}"
        );
    }

    #[test]
    fn the_default_is_the_supervisors_own_uid() {
        let own = nix::unistd::geteuid().as_raw();
        let policy = PeerPolicy::new(vec![], vec![]);
        assert!(policy.check(&peer(own, 12345)).is_ok());
        assert!(policy.check(&peer(own.wrapping_add(1), 12345)).is_err());
    }
}
