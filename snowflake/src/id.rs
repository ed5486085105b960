//! The snowflake id layout (upstream 2.4 compatible) and the per-sequence state machine.
//!
//! ```text
//! bit 63      always 0
//! bits 22..62 milliseconds since 2023-01-01 00:00:00 UTC (41 bits)
//! bits 12..21 node (snowflake.node, 10 bits)
//! bits 0..11  counter within the millisecond (12 bits)
//! ```

/// The snowflake epoch in Unix milliseconds (2023-01-01 00:00:00 UTC).
pub const EPOCH_UNIX_MS: i64 = 1_672_531_200_000;
pub const MAX_MSEC: i64 = (1 << 41) - 1;
pub const MAX_NODE: i64 = (1 << 10) - 1;
pub const MAX_COUNT: i64 = (1 << 12) - 1;

/// How far ahead of a handed-out id the WAL-logged high-water mark runs (as upstream).
pub const WAL_AHEAD_MS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub msec: i64,
    pub node: i64,
    pub count: i64,
}

pub fn encode(p: Parts) -> i64 {
    (p.msec & MAX_MSEC) << 22 | (p.node & MAX_NODE) << 12 | (p.count & MAX_COUNT)
}

pub fn decode(id: i64) -> Parts {
    Parts {
        msec: (id >> 22) & MAX_MSEC,
        node: (id >> 12) & MAX_NODE,
        count: id & MAX_COUNT,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextError {
    /// INCREMENT ≤ 0 would re-issue ids (upstream lets a negative one do that).
    BadIncrement(i64),
    /// 41 bits of milliseconds run out in 2092.
    Exhausted,
}

/// The id after `last` (the sequence's stored value) at wall-clock `now_ms` (ms since the
/// snowflake epoch), for `node` with counter step `increment`.
///
/// A clock that moved forward starts a new millisecond at count 0. A clock that stood still or
/// went backwards keeps the stored millisecond and steps the counter; past 4095 it moves on to the
/// next millisecond, so ids never repeat and never decrease, whatever the clock does.
pub fn next(last: i64, now_ms: i64, node: i64, increment: i64) -> Result<i64, NextError> {
    if increment <= 0 {
        return Err(NextError::BadIncrement(increment));
    }
    let prev = decode(last);
    let (msec, count) = if now_ms > prev.msec {
        (now_ms, 0)
    } else {
        match prev.count.checked_add(increment) {
            Some(c) if c <= MAX_COUNT => (prev.msec, c),
            _ => (prev.msec + 1, 0),
        }
    };
    if msec > MAX_MSEC {
        return Err(NextError::Exhausted);
    }
    Ok(encode(Parts { msec, node, count }))
}

/// The value WAL-logged ahead of `id`: replay restarts the sequence from there, so every id
/// issued before a crash stays below every id issued after it.
pub fn wal_horizon(id: i64) -> i64 {
    let p = decode(id);
    encode(Parts {
        msec: (p.msec + WAL_AHEAD_MS).min(MAX_MSEC),
        node: p.node,
        count: 0,
    })
}

/// Unix-epoch seconds of the id's timestamp with millisecond precision, as numeric text
/// (`get_epoch`).
pub fn epoch_text(id: i64) -> String {
    let ms = decode(id).msec + EPOCH_UNIX_MS;
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let p = Parts {
            msec: 123_456_789,
            node: 1023,
            count: 4095,
        };
        assert_eq!(decode(encode(p)), p);
        assert_eq!(
            encode(Parts {
                msec: 1,
                node: 1,
                count: 1
            }),
            (1 << 22) | (1 << 12) | 1
        );
        assert!(
            encode(Parts {
                msec: MAX_MSEC,
                node: MAX_NODE,
                count: MAX_COUNT
            }) > 0
        );
    }

    #[test]
    fn new_millisecond_starts_at_zero() {
        let last = encode(Parts {
            msec: 100,
            node: 3,
            count: 7,
        });
        assert_eq!(
            decode(next(last, 101, 3, 1).unwrap()),
            Parts {
                msec: 101,
                node: 3,
                count: 0
            }
        );
    }

    #[test]
    fn same_or_earlier_millisecond_steps_the_counter() {
        let last = encode(Parts {
            msec: 100,
            node: 3,
            count: 7,
        });
        assert_eq!(decode(next(last, 100, 3, 1).unwrap()).count, 8);
        // Clock stepped back a whole second: still after `last`.
        let id = next(last, 0, 3, 5).unwrap();
        assert_eq!(
            decode(id),
            Parts {
                msec: 100,
                node: 3,
                count: 12
            }
        );
        assert!(id > last);
    }

    #[test]
    fn counter_overflow_moves_into_the_next_millisecond() {
        let last = encode(Parts {
            msec: 100,
            node: 3,
            count: MAX_COUNT,
        });
        assert_eq!(
            decode(next(last, 100, 3, 1).unwrap()),
            Parts {
                msec: 101,
                node: 3,
                count: 0
            }
        );
        let last = encode(Parts {
            msec: 100,
            node: 3,
            count: 10,
        });
        assert_eq!(
            decode(next(last, 100, 3, 5000).unwrap()),
            Parts {
                msec: 101,
                node: 3,
                count: 0
            }
        );
    }

    #[test]
    fn non_positive_increment_is_refused() {
        assert_eq!(next(0, 5, 1, 0), Err(NextError::BadIncrement(0)));
        assert_eq!(next(0, 5, 1, -1), Err(NextError::BadIncrement(-1)));
    }

    #[test]
    fn strictly_increasing_under_any_clock() {
        let mut last = 1; // a fresh sequence
        let clock = [5i64, 5, 5, 4, 3, 9, 9, 2, 2, 2, 10, 10];
        for _ in 0..2000 {
            for &now in &clock {
                let id = next(last, now, 7, 3).unwrap();
                assert!(id > last);
                last = id;
            }
        }
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let last = encode(Parts {
            msec: MAX_MSEC,
            node: 1,
            count: MAX_COUNT,
        });
        assert_eq!(next(last, MAX_MSEC, 1, 1), Err(NextError::Exhausted));
    }

    #[test]
    fn wal_horizon_is_ahead_of_the_id() {
        let id = encode(Parts {
            msec: 100,
            node: 9,
            count: 4000,
        });
        let h = wal_horizon(id);
        assert_eq!(
            decode(h),
            Parts {
                msec: 130,
                node: 9,
                count: 0
            }
        );
        assert!(h > id);
    }

    #[test]
    fn epoch_is_unix_seconds() {
        assert_eq!(epoch_text(0), "1672531200.000");
        let id = encode(Parts {
            msec: 1_500,
            node: 0,
            count: 0,
        });
        assert_eq!(epoch_text(id), "1672531201.500");
    }
}
