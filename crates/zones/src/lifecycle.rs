//! The zone life cycle: planned -> applying -> active -> releasing -> released, and
//! applying -> rolling_back -> released when a create fails or is recovered after a crash.

use serde::{Deserialize, Serialize};

/// Where a zone is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneState {
    /// Planned, nothing applied yet.
    Planned,
    /// Steps being applied (a crash here is rolled back by recovery).
    Applying,
    /// Fully in place.
    Active,
    /// Steps being undone (a crash here is finished by recovery).
    Releasing,
    /// A failed or interrupted create being undone.
    RollingBack,
    /// Gone: nothing of it remains on the host (the record is deleted).
    Released,
}

impl ZoneState {
    pub const ALL: [ZoneState; 6] = [
        ZoneState::Planned,
        ZoneState::Applying,
        ZoneState::Active,
        ZoneState::Releasing,
        ZoneState::RollingBack,
        ZoneState::Released,
    ];

    /// The only transitions a zone may take.
    pub fn can_become(self, next: ZoneState) -> bool {
        use ZoneState::*;
        matches!(
            (self, next),
            (Planned, Applying)
                | (Planned, Released)
                | (Applying, Active)
                | (Applying, RollingBack)
                | (RollingBack, Released)
                | (Active, Releasing)
                | (Releasing, Released)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ZoneState::Planned => "planned",
            ZoneState::Applying => "applying",
            ZoneState::Active => "active",
            ZoneState::Releasing => "releasing",
            ZoneState::RollingBack => "rolling_back",
            ZoneState::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|z| z.as_str() == s)
    }
}

impl std::fmt::Display for ZoneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_is_checked() {
        use ZoneState::*;
        let allowed = [
            (Planned, Applying),
            (Planned, Released),
            (Applying, Active),
            (Applying, RollingBack),
            (RollingBack, Released),
            (Active, Releasing),
            (Releasing, Released),
        ];
        for a in ZoneState::ALL {
            for b in ZoneState::ALL {
                assert_eq!(a.can_become(b), allowed.contains(&(a, b)), "{a} -> {b}");
            }
        }
        // Released is terminal.
        assert!(ZoneState::ALL.iter().all(|s| !Released.can_become(*s)));
    }

    #[test]
    fn names_round_trip() {
        for s in ZoneState::ALL {
            assert_eq!(ZoneState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ZoneState::parse("bogus"), None);
    }
}
