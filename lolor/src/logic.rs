//! The arithmetic of lolor, free of PostgreSQL: open modes, OID composition, seek targets, page
//! splitting and merging, read lengths and the classification of file errors.
//!
//! Nothing here links against the server, so the unit tests at the bottom run without one (the
//! integration test `harness/tests/lolor.rs` includes this file and runs them).

/// `INV_WRITE` of `libpq/libpq-fs.h`.
pub const INV_WRITE: i32 = 0x20000;
/// `INV_READ` of `libpq/libpq-fs.h`.
pub const INV_READ: i32 = 0x40000;

/// Chunk size of `lo_import` / `lo_export` file transfers.
pub const FILE_CHUNK: usize = 256 * 1024;

/// `MaxAllocSize - VARHDRSZ`: the largest bytea a read may return.
pub const MAX_READ_RESULT: i64 = 0x3fff_ffff - 4;

/// Bits of an automatically generated OID that carry `lolor.node`.
pub const NODE_BITS: u32 = 4;
/// The OID counter is reduced modulo this before the node is appended.
pub const COUNTER_MODULUS: u32 = 1 << (32 - NODE_BITS);

/// First retry count at which OID generation logs that it is still searching.
pub const OID_RETRY_LOG_FIRST: u64 = 1_000_000;
/// Largest interval between two of those log messages.
pub const OID_RETRY_LOG_MAX_INTERVAL: u64 = 128_000_000;

/// What a descriptor may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub read: bool,
    pub write: bool,
}

/// The access `lo_open` flags grant; `None` for flags naming neither read nor write. As in core,
/// write implies read.
pub fn open_mode(flags: i32) -> Option<Mode> {
    let write = flags & INV_WRITE != 0;
    let read = write || flags & INV_READ != 0;
    (read || write).then_some(Mode { read, write })
}

/// An automatically generated large-object OID: `16 * (counter mod 2^28) + node`, where a counter
/// that reduces to 0 counts as 1 (so no generated OID is below 16).
pub fn compose_oid(counter: u32, node: u32) -> u32 {
    let reduced = match counter % COUNTER_MODULUS {
        0 => 1,
        c => c,
    };
    (reduced << NODE_BITS) | node
}

/// The node an automatically generated OID was made on (`None` for OIDs below 16, which are
/// never generated).
pub fn node_of(oid: u32) -> Option<u32> {
    (oid >= 1 << NODE_BITS).then_some(oid & ((1 << NODE_BITS) - 1))
}

/// Retry count at which the next "still searching" message is due, after one at `current`.
pub fn next_retry_log(current: u64) -> u64 {
    if current < OID_RETRY_LOG_MAX_INTERVAL {
        current * 2
    } else {
        current + OID_RETRY_LOG_MAX_INTERVAL
    }
}

/// Largest size of a large object: `INT_MAX` pages.
pub fn max_object_size(page: usize) -> i64 {
    i32::MAX as i64 * page as i64
}

/// `lo_lseek`'s `whence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    Set,
    Cur,
    End,
}

impl Whence {
    pub fn from_sql(whence: i32) -> Option<Whence> {
        match whence {
            0 => Some(Whence::Set),
            1 => Some(Whence::Cur),
            2 => Some(Whence::End),
            _ => None,
        }
    }
}

/// The new offset of a seek relative to `base` (0, the current offset or the size), or the
/// out-of-range target as an error. Overflow wraps as it does in core, so a huge positive offset
/// is reported as the negative number it becomes.
pub fn seek_target(base: i64, offset: i64, page: usize) -> Result<i64, i64> {
    let target = base.wrapping_add(offset);
    if target < 0 || target > max_object_size(page) {
        Err(target)
    } else {
        Ok(target)
    }
}

/// Whether a write of `len` bytes at `offset` stays within the maximum size.
pub fn write_fits(offset: i64, len: usize, page: usize) -> bool {
    offset + len as i64 <= max_object_size(page)
}

/// Whether `len` is a valid truncation length.
pub fn truncate_target_ok(len: i64, page: usize) -> bool {
    (0..=max_object_size(page)).contains(&len)
}

/// The page holding byte `offset` and the position inside it.
pub fn page_of(offset: i64, page: usize) -> (i32, usize) {
    (
        (offset / page as i64) as i32,
        (offset % page as i64) as usize,
    )
}

/// Bytes `lo_get(oid, offset, nbytes)` returns for an object of `size` bytes (`nbytes = None`:
/// to the end).
pub fn fragment_len(size: i64, offset: i64, nbytes: Option<i32>) -> i64 {
    if size <= offset {
        return 0;
    }
    match nbytes {
        Some(n) if n as i64 <= size - offset => n as i64,
        _ => size - offset,
    }
}

/// One step of a read: given the stored page `pageno` with contents `data`, fills `buf` from the
/// current `offset` (holes before the page read as zeros), advancing `offset` and `filled`.
pub fn read_page(
    offset: &mut i64,
    buf: &mut [u8],
    filled: &mut usize,
    pageno: i32,
    data: &[u8],
    page: usize,
) {
    let page_start = pageno as i64 * page as i64;
    if page_start > *offset {
        let hole = ((page_start - *offset) as u64).min((buf.len() - *filled) as u64) as usize;
        buf[*filled..*filled + hole].fill(0);
        *filled += hole;
        *offset += hole as i64;
    }
    if *filled < buf.len() {
        let off = (*offset - page_start) as usize;
        if data.len() > off {
            let n = (data.len() - off).min(buf.len() - *filled);
            buf[*filled..*filled + n].copy_from_slice(&data[off..off + n]);
            *filled += n;
            *offset += n as i64;
        }
    }
}

/// Builds the new contents of one page in `work` (at least a page long): the old contents (if the
/// page exists), zeros for a hole up to `off`, then as much of `src` as fits from `off`. Returns
/// the bytes of `src` used and the new page length.
pub fn merge_page(
    old: Option<&[u8]>,
    off: usize,
    src: &[u8],
    work: &mut [u8],
    page: usize,
) -> (usize, usize) {
    let old_len = old.map_or(0, |o| o.len());
    if let Some(old) = old {
        work[..old_len].copy_from_slice(old);
    }
    if off > old_len {
        work[old_len..off].fill(0);
    }
    let n = (page - off).min(src.len());
    work[off..off + n].copy_from_slice(&src[..n]);
    (n, old_len.max(off + n))
}

/// The page that marks the end of an object truncated to `off` bytes into its last page: the old
/// contents cut (or zero-extended) to `off`. Returns the new page length.
pub fn truncate_page(old: Option<&[u8]>, off: usize, work: &mut [u8]) -> usize {
    let keep = old.map_or(0, |o| o.len().min(off));
    if let Some(old) = old {
        work[..keep].copy_from_slice(&old[..keep]);
    }
    work[keep..off].fill(0);
    off
}

/// How core's `errcode_for_file_access()` classifies an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorClass {
    InsufficientPrivilege,
    UndefinedFile,
    DuplicateFile,
    WrongObjectType,
    DiskFull,
    InsufficientResources,
    IoError,
    ObjectInUse,
    Internal,
}

/// Linux errno values (stable ABI) classified like `errcode_for_file_access()`.
pub fn classify_errno(errno: i32) -> FileErrorClass {
    match errno {
        1 | 13 | 30 => FileErrorClass::InsufficientPrivilege, // EPERM EACCES EROFS
        2 => FileErrorClass::UndefinedFile,                   // ENOENT
        17 => FileErrorClass::DuplicateFile,                  // EEXIST
        20 | 21 | 39 => FileErrorClass::WrongObjectType,      // ENOTDIR EISDIR ENOTEMPTY
        28 => FileErrorClass::DiskFull,                       // ENOSPC
        23 | 24 => FileErrorClass::InsufficientResources,     // ENFILE EMFILE
        5 => FileErrorClass::IoError,                         // EIO
        26 => FileErrorClass::ObjectInUse,                    // ETXTBSY
        _ => FileErrorClass::Internal,
    }
}

/// The `%m` text of an I/O error (Rust appends " (os error N)" to strerror's text).
pub fn strerror_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map(str::to_string)
            .unwrap_or(text),
        None => text,
    }
}

/// Whether a privilege check applies at all: superusers and `lo_compat_privileges` skip them.
pub fn privileges_apply(superuser: bool, compat_privileges: bool) -> bool {
    !superuser && !compat_privileges
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 2048;

    #[test]
    fn open_modes_follow_core() {
        assert_eq!(open_mode(0), None);
        assert_eq!(open_mode(1), None);
        let rw = Mode {
            read: true,
            write: true,
        };
        assert_eq!(open_mode(INV_WRITE), Some(rw));
        assert_eq!(open_mode(INV_READ | INV_WRITE), Some(rw));
        assert_eq!(
            open_mode(INV_READ),
            Some(Mode {
                read: true,
                write: false
            })
        );
        assert_eq!(INV_READ, 262144);
        assert_eq!(INV_READ | INV_WRITE, 0x60000);
    }

    #[test]
    fn oids_carry_the_node_in_the_low_bits() {
        assert_eq!(compose_oid(16384, 1), 16384 * 16 + 1);
        assert_eq!(compose_oid(16384, 15), 262159);
        // 0 (and multiples of 2^28) map to 1.
        assert_eq!(compose_oid(0, 3), 16 + 3);
        assert_eq!(compose_oid(COUNTER_MODULUS, 3), 16 + 3);
        assert_eq!(compose_oid(COUNTER_MODULUS + 5, 2), 5 * 16 + 2);
        assert_eq!(compose_oid(u32::MAX, 15), u32::MAX);
        for node in 1..=15 {
            for counter in [1u32, 16384, 1 << 27, u32::MAX - 7] {
                assert_eq!(node_of(compose_oid(counter, node)), Some(node));
            }
        }
        // Distinct nodes never produce the same OID, whatever their counters.
        assert_ne!(compose_oid(100, 1), compose_oid(100, 2));
        assert_eq!(node_of(15), None);
    }

    #[test]
    fn retry_logging_doubles_then_steps() {
        let mut at = OID_RETRY_LOG_FIRST;
        let mut seen = vec![at];
        for _ in 0..9 {
            at = next_retry_log(at);
            seen.push(at);
        }
        assert_eq!(
            &seen[..9],
            &[
                1_000_000,
                2_000_000,
                4_000_000,
                8_000_000,
                16_000_000,
                32_000_000,
                64_000_000,
                128_000_000,
                256_000_000
            ]
        );
        assert_eq!(seen[9], 384_000_000);
    }

    #[test]
    fn seeks_stay_in_range() {
        assert_eq!(Whence::from_sql(0), Some(Whence::Set));
        assert_eq!(Whence::from_sql(2), Some(Whence::End));
        assert_eq!(Whence::from_sql(3), None);
        assert_eq!(seek_target(0, 10, PAGE), Ok(10));
        assert_eq!(seek_target(100, -10, PAGE), Ok(90));
        assert_eq!(seek_target(0, -1, PAGE), Err(-1));
        let max = max_object_size(PAGE);
        assert_eq!(max, 4_398_046_509_056);
        assert_eq!(seek_target(max, 0, PAGE), Ok(max));
        assert_eq!(seek_target(max, 1, PAGE), Err(max + 1));
        assert_eq!(seek_target(i64::MAX, 1, PAGE), Err(i64::MIN));
        assert!(write_fits(max - 10, 10, PAGE));
        assert!(!write_fits(max - 10, 11, PAGE));
        assert!(truncate_target_ok(0, PAGE));
        assert!(!truncate_target_ok(-1, PAGE));
    }

    #[test]
    fn pages_and_fragments() {
        assert_eq!(page_of(0, PAGE), (0, 0));
        assert_eq!(page_of(2047, PAGE), (0, 2047));
        assert_eq!(page_of(2048, PAGE), (1, 0));
        assert_eq!(page_of(5000, PAGE), (2, 904));
        assert_eq!(fragment_len(100, 0, None), 100);
        assert_eq!(fragment_len(100, 10, Some(5)), 5);
        assert_eq!(fragment_len(100, 90, Some(50)), 10);
        assert_eq!(fragment_len(100, 100, Some(5)), 0);
        assert_eq!(fragment_len(100, 200, None), 0);
        assert_eq!(fragment_len(0, 0, None), 0);
    }

    #[test]
    fn reads_fill_holes_with_zeros() {
        // Object: page 0 = 10 bytes of 1, page 2 = 5 bytes of 2 (page 1 is a hole).
        let p0 = vec![1u8; 10];
        let p2 = vec![2u8; 5];
        let mut buf = vec![9u8; 2 * PAGE + 5];
        let (mut offset, mut filled) = (0i64, 0usize);
        read_page(&mut offset, &mut buf, &mut filled, 0, &p0, PAGE);
        assert_eq!((offset, filled), (10, 10));
        read_page(&mut offset, &mut buf, &mut filled, 2, &p2, PAGE);
        assert_eq!(filled, buf.len());
        assert_eq!(offset, 2 * PAGE as i64 + 5);
        assert!(buf[..10].iter().all(|&b| b == 1));
        assert!(buf[10..2 * PAGE].iter().all(|&b| b == 0));
        assert!(buf[2 * PAGE..].iter().all(|&b| b == 2));

        // A short buffer stops inside the hole.
        let mut small = vec![9u8; 20];
        let (mut offset, mut filled) = (5i64, 0usize);
        read_page(&mut offset, &mut small, &mut filled, 0, &p0, PAGE);
        assert_eq!((offset, filled), (10, 5));
        read_page(&mut offset, &mut small, &mut filled, 2, &p2, PAGE);
        assert_eq!((offset, filled), (25, 20));
        assert_eq!(&small[..5], &[1; 5]);
        assert_eq!(&small[5..], &[0; 15]);
    }

    #[test]
    fn writes_merge_into_pages() {
        let mut work = vec![0xffu8; PAGE];
        // New page, written from offset 3.
        let (n, len) = merge_page(None, 3, b"abc", &mut work, PAGE);
        assert_eq!((n, len), (3, 6));
        assert_eq!(&work[..6], b"\0\0\0abc");
        // Existing short page, written beyond its end.
        let (n, len) = merge_page(Some(b"xy"), 4, b"zz", &mut work, PAGE);
        assert_eq!((n, len), (2, 6));
        assert_eq!(&work[..6], b"xy\0\0zz");
        // Overwrite inside an existing page keeps its length.
        let (n, len) = merge_page(Some(b"hello world"), 0, b"J", &mut work, PAGE);
        assert_eq!((n, len), (1, 11));
        assert_eq!(&work[..11], b"Jello world");
        // Only what fits in the page is used.
        let src = vec![7u8; 3000];
        let (n, len) = merge_page(None, 100, &src, &mut work, PAGE);
        assert_eq!((n, len), (PAGE - 100, PAGE));
    }

    #[test]
    fn truncation_cuts_or_extends_the_last_page() {
        let mut work = vec![0xffu8; PAGE];
        assert_eq!(truncate_page(Some(b"abcdef"), 3, &mut work), 3);
        assert_eq!(&work[..3], b"abc");
        assert_eq!(truncate_page(Some(b"ab"), 4, &mut work), 4);
        assert_eq!(&work[..4], b"ab\0\0");
        assert_eq!(truncate_page(None, 2, &mut work), 2);
        assert_eq!(&work[..2], b"\0\0");
        assert_eq!(truncate_page(None, 0, &mut work), 0);
    }

    #[test]
    fn file_errors_are_classified_like_core() {
        assert_eq!(classify_errno(2), FileErrorClass::UndefinedFile);
        assert_eq!(classify_errno(13), FileErrorClass::InsufficientPrivilege);
        assert_eq!(classify_errno(21), FileErrorClass::WrongObjectType);
        assert_eq!(classify_errno(28), FileErrorClass::DiskFull);
        assert_eq!(classify_errno(999), FileErrorClass::Internal);
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(strerror_text(&e), "No such file or directory");
        let e = std::io::Error::other("plain");
        assert_eq!(strerror_text(&e), "plain");
    }

    #[test]
    fn privilege_checks_are_skipped_for_superusers_and_compat_mode() {
        assert!(privileges_apply(false, false));
        assert!(!privileges_apply(true, false));
        assert!(!privileges_apply(false, true));
    }
}
