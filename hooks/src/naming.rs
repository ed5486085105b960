//! Spock's identifiers, computed exactly as upstream so tools that read them keep working:
//! PostgreSQL's `hash_bytes` (Jenkins' lookup3) over names, 16-bit node ids (they double as
//! replication origin ids), and the `spk_…` slot/origin names.

/// PostgreSQL's `hash_bytes` (`hash_any`), for little-endian machines.
pub fn hash_bytes(key: &[u8]) -> u32 {
    let init = 0x9e37_79b9_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let mut k = key;
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The tail: bytes 0-3 go to a, 4-7 to b, 8-10 to c's upper bytes (its lowest byte is left
    // for the length, which the initial value already carries).
    let mut tail = [0u8; 12];
    tail[..k.len()].copy_from_slice(k);
    if k.len() > 8 {
        c = c.wrapping_add(u32::from_le_bytes([0, tail[8], tail[9], tail[10]]));
    }
    if k.len() > 4 {
        b = b.wrapping_add(word(&tail[4..8]));
    }
    if !k.is_empty() {
        a = a.wrapping_add(word(&tail[0..4]));
    }
    finish(&mut a, &mut b, &mut c);
    c
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

/// `node_id`: the name's hash cut to 16 bits.
pub fn node_id(node_name: &str) -> u32 {
    hash_bytes(node_name.as_bytes()) & 0xFFFF
}

/// `sub_id`: the name's full 32-bit hash.
pub fn sub_id(sub_name: &str) -> u32 {
    hash_bytes(sub_name.as_bytes())
}

/// `if_id` and `set_id`: the hash of {node_id, hash(name)} as two native-order words.
pub fn member_id(node_id: u32, name: &str) -> u32 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&node_id.to_ne_bytes());
    bytes[4..].copy_from_slice(&hash_bytes(name.as_bytes()).to_ne_bytes());
    hash_bytes(&bytes)
}

/// Upstream's `shorten_hash`: names longer than `maxlen` keep `maxlen - 8` characters plus the
/// hash in hex, cut to `maxlen - 1` characters (upstream formats into a `maxlen`-byte buffer).
pub fn shorten_hash(s: &str, maxlen: usize) -> String {
    if s.len() <= maxlen {
        return s.to_string();
    }
    let keep: String = s.bytes().take(maxlen - 8).map(char::from).collect();
    let mut out = format!("{keep}{:08x}", hash_bytes(s.as_bytes()));
    out.truncate(maxlen - 1);
    out
}

/// The slot name, which is also the replication origin name of the subscription.
pub fn slot_name(dbname: &str, provider_node: &str, sub_name: &str) -> String {
    let raw = format!(
        "spk_{}_{}_{}",
        shorten_hash(dbname, 16),
        shorten_hash(provider_node, 16),
        shorten_hash(sub_name, 16)
    );
    raw.bytes()
        .take(63)
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' => char::from(b),
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_upstream_check_values() {
        assert_eq!(node_id("test_provider"), 45328);
        assert_eq!(node_id("test_subscriber"), 52665);
        assert_eq!(sub_id("test_subscription"), 3_848_008_564);
        assert_eq!(sub_id("test_subscription"), 0xe55b_f374);
    }

    #[test]
    fn every_tail_length_is_hashed() {
        // Different lengths and contents must all give different hashes.
        let mut seen = std::collections::HashSet::new();
        for len in 0..30 {
            let s = "abcdefghijklmnopqrstuvwxyz0123"[..len].to_string();
            assert!(
                seen.insert(hash_bytes(s.as_bytes())),
                "collision at length {len}"
            );
        }
    }

    #[test]
    fn shortened_names_and_slot_names() {
        assert_eq!(shorten_hash("postgres", 16), "postgres");
        assert_eq!(shorten_hash("test_subscription", 16), "test_sube55bf37");
        assert_eq!(
            slot_name("postgres", "test_provider", "test_subscription"),
            "spk_postgres_test_provider_test_sube55bf37"
        );
        // Anything outside [a-z0-9_] becomes '_'.
        assert_eq!(slot_name("My-DB", "n1", "s"), "spk__y____n1_s");
    }
}
