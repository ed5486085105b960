//! The native wire protocol of the `spock_output` logical decoding plugin (Spock protocol
//! versions 3 and 4). Each message is the payload of one CopyData (XLogData) frame, so there is
//! no length prefix; integers are big-endian.
//!
//! The provider side encodes with [`Message::encode`] (or the streaming [`Writer`] for tuples);
//! the subscriber side decodes with [`Message::decode`], which rejects malformed input with a
//! [`DecodeError`] instead of panicking.

use std::fmt;

pub mod stream;

/// Protocol version we speak, and the oldest we accept.
pub const MAX_PROTO_VERSION: u32 = 4;
pub const MIN_PROTO_VERSION: u32 = 3;
/// Version byte of the startup message.
pub const STARTUP_VERSION: u8 = 1;

/// One column value inside a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that did not change; the subscriber keeps its own.
    UnchangedToast,
    /// Internal Datum bytes (same platform and major only).
    Internal(Vec<u8>),
    /// The type's send/recv binary form.
    Binary(Vec<u8>),
    /// The type's text output (without the trailing NUL the wire carries).
    Text(Vec<u8>),
}

/// A column of a RELATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica-identity key.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Startup(Vec<(String, String)>),
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Origin {
        origin_lsn: u64,
        origin: u16,
    },
    CommitOrder {
        last_commit_ts: i64,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
        remote_insert_lsn: u64,
    },
    Relation {
        relid: u32,
        nspname: String,
        relname: String,
        columns: Vec<Column>,
    },
    Insert {
        relid: u32,
        new: Vec<Value>,
    },
    Update {
        relid: u32,
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relid: u32,
        old: Vec<Value>,
    },
    Truncate {
        relids: Vec<u32>,
        cascade: bool,
        restart_seqs: bool,
    },
    Message {
        xid: u32,
        lsn: u64,
        transactional: bool,
        prefix: String,
        payload: Vec<u8>,
    },
}

/// Appends protocol primitives to a buffer.
#[derive(Debug, Default)]
pub struct Writer<'a> {
    buf: Option<&'a mut Vec<u8>>,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Writer { buf: Some(buf) }
    }

    fn out(&mut self) -> &mut Vec<u8> {
        self.buf.as_mut().expect("writer has a buffer")
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out().push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out().extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out().extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.out().extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out().extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.out().extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out().extend_from_slice(v);
        self
    }
    /// A NUL-terminated string.
    pub fn cstr(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes()).u8(0)
    }

    /// Starts a tuple of `natts` values; follow with one `value` call per column.
    pub fn tuple_header(&mut self, natts: u16) -> &mut Self {
        self.u8(b'T').u16(natts)
    }

    pub fn value(&mut self, v: &Value) -> &mut Self {
        match v {
            Value::Null => self.null_value(),
            Value::UnchangedToast => self.unchanged_toast_value(),
            Value::Internal(b) => self.u8(b'i').u32(b.len() as u32).bytes(b),
            Value::Binary(b) => self.u8(b'b').u32(b.len() as u32).bytes(b),
            Value::Text(t) => self.text_value(t),
        }
    }

    /// A text value straight from the type's output function (NUL added here).
    pub fn text_value(&mut self, text: &[u8]) -> &mut Self {
        self.u8(b't').u32(text.len() as u32 + 1).bytes(text).u8(0)
    }

    /// A binary (send/recv) value.
    pub fn binary_value(&mut self, data: &[u8]) -> &mut Self {
        self.u8(b'b').u32(data.len() as u32).bytes(data)
    }

    fn tuple(&mut self, values: &[Value]) -> &mut Self {
        self.tuple_header(values.len() as u16);
        for v in values {
            self.value(v);
        }
        self
    }

    /// An INSERT of relation `relid`; the new tuple follows.
    pub fn insert_header(&mut self, relid: u32) -> &mut Self {
        self.u8(b'I').u8(0).u32(relid).u8(b'N')
    }

    /// An UPDATE of relation `relid`; the old key tuple (after [`Writer::old_tuple`], when
    /// sent) and then the new tuple (after [`Writer::new_tuple`]) follow.
    pub fn update_header(&mut self, relid: u32) -> &mut Self {
        self.u8(b'U').u8(0).u32(relid)
    }

    /// A DELETE of relation `relid`; the old key tuple follows.
    pub fn delete_header(&mut self, relid: u32) -> &mut Self {
        self.u8(b'D').u8(0).u32(relid).old_tuple()
    }

    /// Marks the tuple that follows as the old row (or its key).
    pub fn old_tuple(&mut self) -> &mut Self {
        self.u8(b'K')
    }

    /// Marks the tuple that follows as the new row.
    pub fn new_tuple(&mut self) -> &mut Self {
        self.u8(b'N')
    }

    /// A value that is NULL.
    pub fn null_value(&mut self) -> &mut Self {
        self.u8(b'n')
    }

    /// A TOASTed value the change left unchanged (not sent).
    pub fn unchanged_toast_value(&mut self) -> &mut Self {
        self.u8(b'u')
    }

    /// The RELATION message header; columns follow with [`Writer::relation_column`].
    pub fn relation_header(
        &mut self,
        relid: u32,
        nspname: &str,
        relname: &str,
        natts: u16,
    ) -> &mut Self {
        self.u8(b'R').u8(0).u32(relid);
        self.u8((nspname.len() + 1) as u8).cstr(nspname);
        self.u8((relname.len() + 1) as u8).cstr(relname);
        self.u8(b'A').u16(natts)
    }

    pub fn relation_column(
        &mut self,
        key: bool,
        name: &str,
        type_oid: u32,
        typmod: i32,
    ) -> &mut Self {
        self.u8(b'C').u8(u8::from(key)).u8(b'N');
        self.u16((name.len() + 1) as u16)
            .cstr(name)
            .u32(type_oid)
            .i32(typmod)
    }
}

impl Message {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        match self {
            Message::Startup(params) => {
                w.u8(b'S').u8(STARTUP_VERSION);
                for (k, v) in params {
                    w.cstr(k).cstr(v);
                }
            }
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                w.u8(b'B').u8(0).u64(*final_lsn).i64(*commit_time).u32(*xid);
            }
            Message::Origin { origin_lsn, origin } => {
                w.u8(b'O').u8(0).u64(*origin_lsn).u16(*origin);
            }
            Message::CommitOrder { last_commit_ts } => {
                w.u8(b'L').u8(0).i64(*last_commit_ts);
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
                remote_insert_lsn,
            } => {
                w.u8(b'C')
                    .u8(0)
                    .u64(*commit_lsn)
                    .u64(*end_lsn)
                    .i64(*commit_time)
                    .u64(*remote_insert_lsn);
            }
            Message::Relation {
                relid,
                nspname,
                relname,
                columns,
            } => {
                w.relation_header(*relid, nspname, relname, columns.len() as u16);
                for c in columns {
                    w.relation_column(c.key, &c.name, c.type_oid, c.typmod);
                }
            }
            Message::Insert { relid, new } => {
                w.insert_header(*relid).tuple(new);
            }
            Message::Update { relid, old, new } => {
                w.update_header(*relid);
                if let Some(old) = old {
                    w.old_tuple().tuple(old);
                }
                w.new_tuple().tuple(new);
            }
            Message::Delete { relid, old } => {
                w.delete_header(*relid).tuple(old);
            }
            Message::Truncate {
                relids,
                cascade,
                restart_seqs,
            } => {
                let flags = u8::from(*cascade) | u8::from(*restart_seqs) << 1;
                w.u8(b'T').u32(relids.len() as u32).u8(flags);
                for r in relids {
                    w.u32(*r);
                }
            }
            Message::Message {
                xid,
                lsn,
                transactional,
                prefix,
                payload,
            } => {
                w.u8(b'M')
                    .u32(*xid)
                    .u64(*lsn)
                    .u8(u8::from(*transactional))
                    .cstr(prefix);
                w.u32(payload.len() as u32).bytes(payload);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one whole message; trailing bytes are an error.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let kind = r.u8()?;
        let msg = match kind {
            b'S' => {
                let version = r.u8()?;
                if version != STARTUP_VERSION {
                    return Err(r.error(format!("unsupported startup message version {version}")));
                }
                let mut params = Vec::new();
                while !r.at_end() {
                    params.push((r.cstr()?, r.cstr()?));
                }
                Message::Startup(params)
            }
            b'B' => {
                r.flags()?;
                Message::Begin {
                    final_lsn: r.u64()?,
                    commit_time: r.i64()?,
                    xid: r.u32()?,
                }
            }
            b'O' => {
                r.flags()?;
                Message::Origin {
                    origin_lsn: r.u64()?,
                    origin: r.u16()?,
                }
            }
            b'L' => {
                r.flags()?;
                Message::CommitOrder {
                    last_commit_ts: r.i64()?,
                }
            }
            b'C' => {
                r.flags()?;
                Message::Commit {
                    commit_lsn: r.u64()?,
                    end_lsn: r.u64()?,
                    commit_time: r.i64()?,
                    remote_insert_lsn: r.u64()?,
                }
            }
            b'R' => {
                r.flags()?;
                let relid = r.u32()?;
                let nspname = r.short_name()?;
                let relname = r.short_name()?;
                r.expect(b'A', "attribute block")?;
                let natts = r.u16()?;
                let mut columns = Vec::with_capacity(natts as usize);
                for _ in 0..natts {
                    r.expect(b'C', "column")?;
                    let colflags = r.u8()?;
                    r.expect(b'N', "column name")?;
                    let len = r.u16()? as usize;
                    let name = r.nul_terminated(len)?;
                    columns.push(Column {
                        key: colflags & 1 != 0,
                        name,
                        type_oid: r.u32()?,
                        typmod: r.i32()?,
                    });
                }
                Message::Relation {
                    relid,
                    nspname,
                    relname,
                    columns,
                }
            }
            b'I' => {
                r.flags()?;
                let relid = r.u32()?;
                r.expect(b'N', "new tuple")?;
                Message::Insert {
                    relid,
                    new: r.tuple()?,
                }
            }
            b'U' => {
                r.flags()?;
                let relid = r.u32()?;
                let mut marker = r.u8()?;
                let mut old = None;
                if marker == b'K' || marker == b'O' {
                    old = Some(r.tuple()?);
                    marker = r.u8()?;
                }
                if marker != b'N' {
                    return Err(r.error(format!(
                        "expected new tuple, found {:?}",
                        char::from(marker)
                    )));
                }
                Message::Update {
                    relid,
                    old,
                    new: r.tuple()?,
                }
            }
            b'D' => {
                r.flags()?;
                let relid = r.u32()?;
                let marker = r.u8()?;
                if marker != b'K' && marker != b'O' {
                    return Err(r.error(format!(
                        "expected old tuple, found {:?}",
                        char::from(marker)
                    )));
                }
                Message::Delete {
                    relid,
                    old: r.tuple()?,
                }
            }
            b'T' => {
                let n = r.u32()?;
                let flags = r.u8()?;
                let mut relids = Vec::new();
                for _ in 0..n {
                    relids.push(r.u32()?);
                }
                Message::Truncate {
                    relids,
                    cascade: flags & 1 != 0,
                    restart_seqs: flags & 2 != 0,
                }
            }
            b'M' => {
                let xid = r.u32()?;
                let lsn = r.u64()?;
                let transactional = r.u8()? != 0;
                let prefix = r.cstr()?;
                let size = r.u32()? as usize;
                let payload = r.take(size)?.to_vec();
                Message::Message {
                    xid,
                    lsn,
                    transactional,
                    prefix,
                    payload,
                }
            }
            other => return Err(r.error(format!("unknown message type {:?}", char::from(other)))),
        };
        if !r.at_end() {
            return Err(r.error(format!("{} trailing bytes", buf.len() - r.pos)));
        }
        Ok(msg)
    }
}

/// Why a message could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed spock protocol message at byte {}: {}",
            self.offset, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: String) -> DecodeError {
        DecodeError {
            offset: self.pos,
            reason,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.error(format!(
                "needs {n} more bytes, has {}",
                self.buf.len() - self.pos
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn flags(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            0 => Ok(()),
            f => Err(self.error(format!("unexpected flags {f}"))),
        }
    }

    fn expect(&mut self, want: u8, what: &str) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got != want {
            return Err(self.error(format!(
                "expected {what} marker {:?}, found {:?}",
                char::from(want),
                char::from(got)
            )));
        }
        Ok(())
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error("unterminated string".into()));
        };
        let s = String::from_utf8(rest[..nul].to_vec())
            .map_err(|_| self.error("string is not UTF-8".into()))?;
        self.pos += nul + 1;
        Ok(s)
    }

    /// `len` bytes whose last one is the terminating NUL.
    fn nul_terminated(&mut self, len: usize) -> Result<String, DecodeError> {
        let bytes = self.take(len)?;
        match bytes.split_last() {
            Some((0, body)) if !body.contains(&0) => {
                String::from_utf8(body.to_vec()).map_err(|_| self.error("name is not UTF-8".into()))
            }
            _ => Err(self.error("name is not NUL-terminated".into())),
        }
    }

    fn short_name(&mut self) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        self.nul_terminated(len)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        self.expect(b'T', "tuple")?;
        let natts = self.u16()?;
        let mut values = Vec::with_capacity(natts as usize);
        for _ in 0..natts {
            let v = match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::UnchangedToast,
                b'i' => {
                    let len = self.u32()? as usize;
                    Value::Internal(self.take(len)?.to_vec())
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Value::Binary(self.take(len)?.to_vec())
                }
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    match bytes.split_last() {
                        Some((0, text)) => Value::Text(text.to_vec()),
                        _ => return Err(self.error("text value is not NUL-terminated".into())),
                    }
                }
                other => {
                    return Err(self.error(format!("unknown column kind {:?}", char::from(other))));
                }
            };
            values.push(v);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let bytes = m.to_bytes();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    /// The output plugin writes changes value by value from the server's tuples; what it
    /// writes must decode as the message it stands for.
    #[test]
    fn changes_written_piece_by_piece_decode() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.update_header(7).old_tuple().tuple_header(2);
        w.text_value(b"1").null_value();
        w.new_tuple().tuple_header(2);
        w.text_value(b"1").unchanged_toast_value();
        assert_eq!(
            Message::decode(&buf).unwrap(),
            Message::Update {
                relid: 7,
                old: Some(vec![Value::Text(b"1".to_vec()), Value::Null]),
                new: vec![Value::Text(b"1".to_vec()), Value::UnchangedToast],
            }
        );
        buf.clear();
        let mut w = Writer::new(&mut buf);
        w.delete_header(7).tuple_header(1).binary_value(&[0, 1]);
        assert_eq!(
            Message::decode(&buf).unwrap(),
            Message::Delete {
                relid: 7,
                old: vec![Value::Binary(vec![0, 1])],
            }
        );
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Startup(vec![(
            "max_proto_version".into(),
            "4".into(),
        )]));
        round_trip(Message::Begin {
            final_lsn: 0x1_0000_0010,
            commit_time: -5,
            xid: 771,
        });
        round_trip(Message::Origin {
            origin_lsn: 42,
            origin: 45328,
        });
        round_trip(Message::CommitOrder { last_commit_ts: 0 });
        round_trip(Message::Commit {
            commit_lsn: 1,
            end_lsn: 2,
            commit_time: 3,
            remote_insert_lsn: 4,
        });
        round_trip(Message::Relation {
            relid: 16384,
            nspname: "public".into(),
            relname: "t".into(),
            columns: vec![
                Column {
                    key: true,
                    name: "id".into(),
                    type_oid: 23,
                    typmod: -1,
                },
                Column {
                    key: false,
                    name: "v".into(),
                    type_oid: 1043,
                    typmod: 14,
                },
            ],
        });
        let row = vec![
            Value::Text(b"1".to_vec()),
            Value::Null,
            Value::UnchangedToast,
            Value::Binary(vec![0, 1, 2]),
            Value::Internal(vec![9; 8]),
        ];
        round_trip(Message::Insert {
            relid: 7,
            new: row.clone(),
        });
        round_trip(Message::Update {
            relid: 7,
            old: None,
            new: row.clone(),
        });
        round_trip(Message::Update {
            relid: 7,
            old: Some(row.clone()),
            new: row.clone(),
        });
        round_trip(Message::Delete { relid: 7, old: row });
        round_trip(Message::Truncate {
            relids: vec![1, 2],
            cascade: true,
            restart_seqs: false,
        });
        round_trip(Message::Message {
            xid: 9,
            lsn: 10,
            transactional: true,
            prefix: "Spock".into(),
            payload: vec![3, 0, 0, 0],
        });
    }

    #[test]
    fn wire_layout_is_fixed() {
        // BEGIN: type, flags, u64 final_lsn, i64 commit_time, u32 xid — big-endian.
        let b = Message::Begin {
            final_lsn: 1,
            commit_time: 2,
            xid: 3,
        }
        .to_bytes();
        assert_eq!(
            b,
            [
                b"B\0".as_slice(),
                &1u64.to_be_bytes(),
                &2i64.to_be_bytes(),
                &3u32.to_be_bytes()
            ]
            .concat()
        );
        // TRUNCATE puts its flags after the count and has no leading flags byte.
        let t = Message::Truncate {
            relids: vec![5],
            cascade: false,
            restart_seqs: true,
        }
        .to_bytes();
        assert_eq!(
            t,
            [
                b"T".as_slice(),
                &1u32.to_be_bytes(),
                &[2],
                &5u32.to_be_bytes()
            ]
            .concat()
        );
        // ORIGIN carries a 2-byte node id; text values carry their NUL in the length.
        let o = Message::Origin {
            origin_lsn: 0,
            origin: 0x0102,
        }
        .to_bytes();
        assert_eq!(&o[10..], &[1, 2]);
        let i = Message::Insert {
            relid: 1,
            new: vec![Value::Text(b"ab".to_vec())],
        }
        .to_bytes();
        assert_eq!(
            &i[7..],
            [
                b"T".as_slice(),
                &1u16.to_be_bytes(),
                b"t",
                &3u32.to_be_bytes(),
                b"ab\0"
            ]
            .concat()
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = Message::Relation {
            relid: 1,
            nspname: "s".into(),
            relname: "t".into(),
            columns: vec![Column {
                key: true,
                name: "id".into(),
                type_oid: 23,
                typmod: -1,
            }],
        }
        .to_bytes();
        // Every truncation of a valid message fails cleanly.
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let e = Message::decode(b"Z\0").unwrap_err();
        assert!(e.to_string().contains("unknown message type 'Z'"), "{e}");
        let e = Message::decode(b"B\x01").unwrap_err();
        assert!(e.to_string().contains("unexpected flags 1"), "{e}");
        let mut extra = Message::CommitOrder { last_commit_ts: 1 }.to_bytes();
        extra.push(0);
        assert!(
            Message::decode(&extra)
                .unwrap_err()
                .to_string()
                .contains("1 trailing bytes")
        );
        // A huge length must not allocate or panic.
        let bogus = [
            b"I\0".as_slice(),
            &1u32.to_be_bytes(),
            b"NT",
            &1u16.to_be_bytes(),
            b"b",
            &u32::MAX.to_be_bytes(),
        ]
        .concat();
        assert!(
            Message::decode(&bogus)
                .unwrap_err()
                .to_string()
                .contains("more bytes")
        );
    }
}
