//! The streaming-replication envelope around protocol messages: CopyData payloads from the
//! walsender ('w' XLogData, 'k' keepalive) and the subscriber's 'r' status update.

use crate::DecodeError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSender<'a> {
    /// One protocol message, at WAL position `wal_start`.
    XLogData {
        wal_start: u64,
        wal_end: u64,
        send_time: i64,
        data: &'a [u8],
    },
    Keepalive {
        wal_end: u64,
        send_time: i64,
        reply_requested: bool,
    },
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

impl<'a> FromSender<'a> {
    pub fn decode(buf: &'a [u8]) -> Result<FromSender<'a>, DecodeError> {
        let short = |need: usize| DecodeError {
            offset: buf.len(),
            reason: format!("replication message needs {need} bytes, has {}", buf.len()),
        };
        match buf.first() {
            Some(b'w') => {
                if buf.len() < 25 {
                    return Err(short(25));
                }
                Ok(FromSender::XLogData {
                    wal_start: be_u64(&buf[1..9]),
                    wal_end: be_u64(&buf[9..17]),
                    send_time: be_u64(&buf[17..25]) as i64,
                    data: &buf[25..],
                })
            }
            Some(b'k') => {
                if buf.len() < 18 {
                    return Err(short(18));
                }
                Ok(FromSender::Keepalive {
                    wal_end: be_u64(&buf[1..9]),
                    send_time: be_u64(&buf[9..17]) as i64,
                    reply_requested: buf[17] != 0,
                })
            }
            other => Err(DecodeError {
                offset: 0,
                reason: format!(
                    "unknown replication message {:?}",
                    other.map(|b| char::from(*b))
                ),
            }),
        }
    }
}

/// The 'r' standby status update: what the subscriber received, flushed and applied.
pub fn status_update(received: u64, flushed: u64, applied: u64, now: i64, reply: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.push(b'r');
    out.extend_from_slice(&received.to_be_bytes());
    out.extend_from_slice(&flushed.to_be_bytes());
    out.extend_from_slice(&applied.to_be_bytes());
    out.extend_from_slice(&now.to_be_bytes());
    out.push(u8::from(reply));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&5u64.to_be_bytes());
        w.extend_from_slice(&6u64.to_be_bytes());
        w.extend_from_slice(&7i64.to_be_bytes());
        w.extend_from_slice(b"B\0");
        assert_eq!(
            FromSender::decode(&w).unwrap(),
            FromSender::XLogData {
                wal_start: 5,
                wal_end: 6,
                send_time: 7,
                data: b"B\0"
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&9u64.to_be_bytes());
        k.extend_from_slice(&1i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            FromSender::decode(&k).unwrap(),
            FromSender::Keepalive {
                wal_end: 9,
                send_time: 1,
                reply_requested: true
            }
        );
        assert!(FromSender::decode(&k[..10]).is_err());
        assert!(FromSender::decode(b"x").is_err());
        let r = status_update(1, 2, 3, 4, false);
        assert_eq!(r.len(), 34);
        assert_eq!(r[0], b'r');
        assert_eq!(&r[9..17], &2u64.to_be_bytes());
    }
}
