//! How much of the agent one local user may hold: connections that have not yet sent their
//! request, and sessions (each one a root worker process), counted per uid from `SO_PEERCRED`.
//!
//! A slot is a value that gives its place back when dropped, so a connection or session that ends
//! any way at all (answered, refused, timed out, worker exited, panic) is no longer counted.
//! Root is not limited: it is the administrator, and the session workers (root) reconnect here
//! for their guard, all at once after an agent restart.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Connections of one uid that may wait for their request at once (past it, new ones are
/// answered with a refusal and closed).
pub const MAX_PENDING_PER_USER: usize = 8;

/// Connections of all non-root users that may wait for their request at once.
pub const MAX_PENDING: usize = 128;

/// Sessions per user when the config does not say (`max_sessions_per_user`).
pub const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 32;

/// The counts, shared by the accept loop and the session workers' reapers.
#[derive(Debug, Default)]
pub struct Admission {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    pending: HashMap<u32, usize>,
    pending_total: usize,
    sessions: HashMap<u32, usize>,
}

/// Why a slot was not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// This uid has [`MAX_PENDING_PER_USER`] connections waiting.
    PendingUser,
    /// All users together have [`MAX_PENDING`] connections waiting.
    PendingAll,
    /// This uid runs as many sessions as the cap allows (the cap).
    Sessions(u32),
}

/// Which count a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pending,
    Session,
}

/// A place in a count, given back on drop. Root's slots count nothing.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    uid: u32,
    kind: Kind,
}

impl Admission {
    /// A place for a connection of `uid` that has not sent its request yet.
    pub fn pending(self: &Arc<Self>, uid: u32) -> Result<Slot, Full> {
        let mut c = self.lock();
        if uid != 0 {
            let mine = c.pending.get(&uid).copied().unwrap_or(0);
            if mine >= MAX_PENDING_PER_USER {
                return Err(Full::PendingUser);
            }
            if c.pending_total >= MAX_PENDING {
                return Err(Full::PendingAll);
            }
            c.pending.insert(uid, mine + 1);
            c.pending_total += 1;
        }
        Ok(self.slot(uid, Kind::Pending))
    }

    /// A place for a session of `uid`, at most `cap` at once.
    pub fn session(self: &Arc<Self>, uid: u32, cap: u32) -> Result<Slot, Full> {
        let mut c = self.lock();
        if uid != 0 {
            let mine = c.sessions.get(&uid).copied().unwrap_or(0);
            if mine >= cap as usize {
                return Err(Full::Sessions(cap));
            }
            c.sessions.insert(uid, mine + 1);
        }
        Ok(self.slot(uid, Kind::Session))
    }

    /// Sessions `uid` holds now.
    pub fn sessions_of(&self, uid: u32) -> usize {
        self.lock().sessions.get(&uid).copied().unwrap_or(0)
    }

    fn slot(self: &Arc<Self>, uid: u32, kind: Kind) -> Slot {
        Slot {
            admission: Arc::clone(self),
            uid,
            kind,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic elsewhere: every change is one statement.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.uid == 0 {
            return;
        }
        let mut c = self.admission.lock();
        let map = match self.kind {
            Kind::Pending => {
                c.pending_total = c.pending_total.saturating_sub(1);
                &mut c.pending
            }
            Kind::Session => &mut c.sessions,
        };
        if let Some(n) = map.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_bounded_per_user_and_in_all() {
        let a = Arc::new(Admission::default());
        let mine: Vec<Slot> = (0..MAX_PENDING_PER_USER)
            .map(|_| a.pending(1000).expect("under the bound"))
            .collect();
        assert_eq!(a.pending(1000).err(), Some(Full::PendingUser));
        // Another user is not held up by the first one's connections, nor is root.
        let theirs = a.pending(1001).expect("another user");
        let roots: Vec<Slot> = (0..MAX_PENDING * 2)
            .map(|_| a.pending(0).expect("root"))
            .collect();
        drop(mine);
        assert!(a.pending(1000).is_ok(), "slots come back when dropped");
        drop((theirs, roots));
        let many: Vec<Slot> = (0..u32::try_from(MAX_PENDING).expect("a few slots"))
            .map(|uid| a.pending(2000 + uid).expect("one each"))
            .collect();
        assert_eq!(a.pending(5000).err(), Some(Full::PendingAll));
        drop(many);
        assert!(a.pending(5000).is_ok());
    }

    #[test]
    fn sessions_are_capped_per_user_and_released_on_drop() {
        let a = Arc::new(Admission::default());
        let s1 = a.session(1000, 2).expect("first");
        let _s2 = a.session(1000, 2).expect("second");
        assert_eq!(a.session(1000, 2).err(), Some(Full::Sessions(2)));
        assert_eq!(a.sessions_of(1000), 2);
        let _other = a.session(1001, 2).expect("another user's own count");
        let _root: Vec<Slot> = (0..10).map(|_| a.session(0, 2).expect("root")).collect();
        drop(s1);
        assert_eq!(a.sessions_of(1000), 1);
        let _s3 = a.session(1000, 2).expect("after one ended");
        // A lowered cap (SIGHUP) refuses new sessions until enough have ended.
        assert_eq!(a.session(1000, 1).err(), Some(Full::Sessions(1)));
    }
}
