//! The `classify` fuzz harness (libFuzzer target and `cargo test` corpus replay).
//!
//! Any bytes, as an Ethernet frame and as a raw IP packet: classification never panics, every
//! offset it reports lies inside the buffer, and errors point inside the buffer too.
//! (tests/classify_props.rs compares classifications with etherparse's on valid packets.)

use lvs::wire::{Classified, ClassifyOptions, LinkType, classify};

pub fn classify_any(data: &[u8]) {
    let opts = ClassifyOptions {
        gue_port: Some(6080),
    };
    for link in [LinkType::Ethernet, LinkType::RawIp] {
        match classify(data, link, &opts) {
            Ok(Classified::Ip(l)) => {
                assert!(l.l3_offset as usize <= data.len());
                assert!(l.l4_offset as usize <= data.len());
                assert!(l.l3_offset < l.l4_offset);
                if let Some(o) = l.final_dst_offset {
                    assert!(o as usize + 16 <= data.len());
                }
                if let Some(f) = l.flow {
                    assert_eq!(f.src.is_ipv6(), l.ip_version == 6);
                }
            }
            Ok(Classified::NotIp { .. }) => assert_eq!(link, LinkType::Ethernet),
            Err(e) => {
                assert!(e.offset <= data.len(), "{e}");
                let _ = e.to_string();
            }
        }
    }
}
