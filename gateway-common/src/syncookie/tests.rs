use super::*;

const KEY: [u64; 2] = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
const FLOW: Handshake = Handshake {
    addrs: [0x0200_12c6_0100_12c6, 0, 0, 0],
    ports: 0xbb01_3930,
    client_isn: 0xdead_beef,
    ipv6: false,
};
const OPTS: SynOptions = SynOptions {
    mss_index: 3,
    wscale: Some(7),
    sack: true,
    ecn: false,
};

fn ring(slot: u64) -> [CookieKey; 3] {
    let mut ring = [CookieKey::default(); 3];
    for s in [slot.wrapping_sub(1), slot, slot + 1] {
        ring[key_index(s) as usize] = CookieKey {
            slot: s,
            key: [KEY[0] ^ s, KEY[1]],
        };
    }
    ring
}

fn minted(slot: u64, flow: &Handshake, opts: &SynOptions) -> u32 {
    let r = ring(slot);
    mint(r[key_index(slot) as usize].key, flow, slot, opts)
}

#[test]
fn a_cookie_checks_in_its_slot_and_the_next_only() {
    let cookie = minted(1000, &FLOW, &OPTS);
    assert_eq!(check(&ring(1000), &FLOW, 1000, cookie), Some(OPTS));
    assert_eq!(check(&ring(1001), &FLOW, 1001, cookie), Some(OPTS));
    assert_eq!(check(&ring(1002), &FLOW, 1002, cookie), None);
    assert_eq!(check(&ring(999), &FLOW, 999, cookie), None);
}

#[test]
fn a_rotated_away_key_fails_closed() {
    let cookie = minted(1000, &FLOW, &OPTS);
    let mut r = ring(1000);
    r[key_index(1000) as usize].slot = 0;
    assert_eq!(check(&r, &FLOW, 1000, cookie), None);
}

#[test]
fn a_cookie_is_bound_to_key_flow_isn_and_options() {
    let cookie = minted(7, &FLOW, &OPTS);
    let other_isn = Handshake {
        client_isn: FLOW.client_isn + 1,
        ..FLOW
    };
    let other_port = Handshake {
        ports: FLOW.ports ^ 1,
        ..FLOW
    };
    let other_family = Handshake { ipv6: true, ..FLOW };
    assert_eq!(check(&ring(7), &other_isn, 7, cookie), None);
    assert_eq!(check(&ring(7), &other_port, 7, cookie), None);
    assert_eq!(check(&ring(7), &other_family, 7, cookie), None);
    // Another MSS index or SACK bit with the same hash: refused.
    assert_eq!(check(&ring(7), &FLOW, 7, cookie ^ 0x40), None);
    assert_eq!(check(&ring(7), &FLOW, 7, cookie ^ 0x02), None);
    assert_eq!(check(&ring(7), &FLOW, 7, cookie ^ 0x100), None);
}

#[test]
fn every_option_combination_round_trips_through_the_bits() {
    for mss_index in 0..4u8 {
        for wscale in (0..=14u8).map(Some).chain([None]) {
            for (sack, ecn) in [(false, false), (true, false), (false, true), (true, true)] {
                let opts = SynOptions {
                    mss_index,
                    wscale,
                    sack,
                    ecn,
                };
                assert!(opts.bits() < 256);
                assert_eq!(SynOptions::from_bits(opts.bits()), Some(opts));
            }
        }
    }
}

#[test]
fn options_are_agreed_within_what_the_kernel_allows() {
    let offered = Offered {
        mss: 1460,
        wscale: Some(9),
        sack: true,
        timestamps: Some((1, 0)),
        ecn: true,
    };
    let all = ALLOW_WSCALE | ALLOW_SACK | ALLOW_TIMESTAMPS | ALLOW_ECN;
    let agreed = SynOptions::agree(&offered, all, false);
    assert_eq!(agreed.mss(false), 1460);
    assert_eq!(agreed.wscale, Some(9));
    assert!(agreed.sack && agreed.ecn);
    let none = SynOptions::agree(&offered, 0, false);
    assert_eq!((none.wscale, none.sack, none.ecn), (None, false, false));
    let huge = Offered {
        wscale: Some(200),
        ..offered
    };
    assert_eq!(SynOptions::agree(&huge, all, false).wscale, Some(14));
    let v6 = SynOptions::agree(&Offered::default(), all, true);
    assert_eq!(v6.mss(true), 1220);
}

#[test]
fn the_mss_rounds_down_to_the_table() {
    assert_eq!(mss_index(0, false), 0);
    assert_eq!(mss_index(1299, false), 0);
    assert_eq!(mss_index(1300, false), 1);
    assert_eq!(mss_index(1459, false), 2);
    assert_eq!(mss_index(9000, false), 3);
    assert_eq!(mss_index(1440, true), 2);
    assert_eq!(mss_index(9000, true), 3);
}

#[test]
fn a_linux_syn_is_read_whole() {
    // MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    let offered = parse_options(
        &[
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 1, 0, 0, 0, 0, 9, 1, 3, 3, 7,
        ],
        0xc2,
    );
    assert_eq!(
        offered,
        Offered {
            mss: 1460,
            wscale: Some(7),
            sack: true,
            timestamps: Some((256, 9)),
            ecn: true,
        }
    );
}

#[test]
fn malformed_options_end_the_walk_without_panicking() {
    for bytes in [
        &[2u8][..],
        &[2, 4, 5][..],
        &[2, 0, 1, 1][..],
        &[2, 1][..],
        &[8, 10, 1, 2, 3][..],
        &[3, 3][..],
        &[1; 40][..],
        &[254, 40][..],
    ] {
        let offered = parse_options(bytes, 0);
        assert_eq!(offered.timestamps, None, "{bytes:?}");
    }
    // An area longer than TCP allows is read as far as TCP allows.
    let mut long = [1u8; 60];
    long[40..44].copy_from_slice(&[2, 4, 5, 180]);
    assert_eq!(parse_options(&long, 0).mss, 0);
}

#[test]
fn synack_options_are_word_aligned_and_carry_what_was_agreed() {
    let mut out = [0u8; SYNACK_OPTIONS_MAX];
    let len = write_synack_options(&OPTS, 1460, Some((5, 9)), &mut out);
    assert_eq!(len, 20);
    let read = parse_options(&out[..len], 0);
    assert_eq!(read.mss, 1460);
    assert_eq!(read.wscale, Some(OUR_WSCALE));
    assert!(read.sack);
    assert_eq!(read.timestamps, Some((5, 9)));
    for (opts, ts, want) in [
        (SynOptions::default(), None, 4),
        (OPTS, None, 12),
        (
            SynOptions {
                sack: true,
                ..SynOptions::default()
            },
            None,
            8,
        ),
        (SynOptions::default(), Some((1, 2)), 16),
    ] {
        let len = write_synack_options(&opts, 536, ts, &mut out);
        assert_eq!(len, want);
        assert_eq!(len % 4, 0);
    }
}
