//! Test data: payloads in which a lost, doubled or reordered piece shows.
//!
//! Both come from one xorshift64 generator, so they never repeat with a
//! short period (a chunk dropped and another doubled cannot cancel out) and
//! the same `seed` gives the same bytes in every run.
//!
//! | function | bytes |
//! |---|---|
//! | [`text`] | printable: lowercase letters with a newline every 64 bytes, so a transcript stays readable (echo and chat payloads) |
//! | [`binary`] | every byte value, NUL and CR LF included (bodies and files that must pass through untouched) |

/// The generator behind both payloads: xorshift64, cheap, with a period
/// far beyond any payload here.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    // A zero state would stay zero; the multiply spreads small seeds.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// `len` printable bytes, a newline every 64; see the module docs.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed);
    (0..len)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + (next() % 26) as u8
            }
        })
        .collect()
}

/// `len` bytes of every value; see the module docs.
pub fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed);
    (0..len).map(|_| (next() >> 24) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_does_not_repeat_and_is_printable() {
        let p = text(1 << 16, 1);
        assert_ne!(p[..4096], p[4096..8192]);
        assert!(p.iter().all(|&b| b == b'\n' || b.is_ascii_lowercase()));
        assert_ne!(text(100, 1), text(100, 2));
    }

    #[test]
    fn binary_covers_every_byte_value() {
        let p = binary(1 << 16, 7);
        let mut seen = [false; 256];
        for &b in &p {
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_ne!(p[..4096], p[4096..8192]);
        assert_eq!(binary(100, 3), binary(100, 3));
    }
}
