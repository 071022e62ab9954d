//! Encodings compared with bytes worked out by hand from etcd's field
//! numbers. A tag byte is `(field_number << 3) | wire_type`, with wire type 0
//! for varints and 2 for length-delimited values.

use cairn_proto::etcdserverpb::{
    compare, range_request, watch_create_request, watch_request, Compare, RangeRequest,
    ResponseHeader, StatusResponse, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use cairn_proto::mvccpb::{event, Event, KeyValue};
use prost::Message;

#[test]
fn range_request_uses_fields_1_to_13() {
    let req = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 3,
        revision: 4,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 10,
        max_mod_revision: 11,
        min_create_revision: 12,
        max_create_revision: 13,
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x0a, 0x01, b'a', // 1 key
        0x12, 0x01, b'b', // 2 range_end
        0x18, 3,          // 3 limit
        0x20, 4,          // 4 revision
        0x28, 2,          // 5 sort_order = DESCEND
        0x30, 3,          // 6 sort_target = MOD
        0x38, 1,          // 7 serializable
        0x40, 1,          // 8 keys_only
        0x48, 1,          // 9 count_only
        0x50, 10,         // 10 min_mod_revision
        0x58, 11,         // 11 max_mod_revision
        0x60, 12,         // 12 min_create_revision
        0x68, 13,         // 13 max_create_revision
    ];
    assert_eq!(req.encode_to_vec(), want);
    assert_eq!(
        RangeRequest::decode(want).expect("hand-made bytes decode"),
        req
    );
}

#[test]
fn compare_target_union_is_4_to_8_and_range_end_is_64() {
    let cases: &[(compare::TargetUnion, &[u8])] = &[
        (compare::TargetUnion::Version(5), &[0x20, 5]),
        (compare::TargetUnion::CreateRevision(5), &[0x28, 5]),
        (compare::TargetUnion::ModRevision(5), &[0x30, 5]),
        (compare::TargetUnion::Value(b"v".to_vec()), &[0x3a, 1, b'v']),
        (compare::TargetUnion::Lease(5), &[0x40, 5]),
        // A oneof member is sent even when zero: etcd clients test that a key
        // does not exist with `version == 0`.
        (compare::TargetUnion::Version(0), &[0x20, 0]),
    ];
    for (target_union, want) in cases {
        let cmp = Compare {
            target_union: Some(target_union.clone()),
            ..Compare::default()
        };
        assert_eq!(cmp.encode_to_vec(), *want, "{target_union:?}");
    }

    let cmp = Compare {
        result: compare::CompareResult::NotEqual as i32,
        target: compare::CompareTarget::Mod as i32,
        key: b"k".to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(7)),
        range_end: b"l".to_vec(),
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x08, 3,               // 1 result = NOT_EQUAL
        0x10, 2,               // 2 target = MOD
        0x1a, 1, b'k',         // 3 key
        0x30, 7,               // 6 mod_revision
        0x82, 0x04, 1, b'l',   // 64 range_end: (64 << 3) | 2 = 514, a two-byte varint
    ];
    assert_eq!(cmp.encode_to_vec(), want);
}

#[test]
fn watch_create_request_uses_fields_1_to_8() {
    let req = WatchCreateRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        start_revision: 3,
        progress_notify: true,
        filters: vec![
            watch_create_request::FilterType::Noput as i32,
            watch_create_request::FilterType::Nodelete as i32,
        ],
        prev_kv: true,
        watch_id: 7,
        fragment: true,
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x0a, 1, b'a',    // 1 key
        0x12, 1, b'b',    // 2 range_end
        0x18, 3,          // 3 start_revision
        0x20, 1,          // 4 progress_notify
        0x2a, 2, 0, 1,    // 5 filters, packed: NOPUT, NODELETE
        0x30, 1,          // 6 prev_kv
        0x38, 7,          // 7 watch_id
        0x40, 1,          // 8 fragment
    ];
    assert_eq!(req.encode_to_vec(), want);
}

#[test]
fn watch_request_union_is_create_1_cancel_2_progress_3() {
    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    };
    assert_eq!(progress.encode_to_vec(), [0x1a, 0]);

    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest::default(),
        )),
    };
    assert_eq!(create.encode_to_vec(), [0x0a, 0]);
}

#[test]
fn watch_response_events_are_field_11() {
    let resp = WatchResponse {
        header: Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        }),
        watch_id: 5,
        events: vec![Event {
            r#type: event::EventType::Delete as i32,
            kv: None,
            prev_kv: None,
        }],
        ..WatchResponse::default()
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x0a, 8, 0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4, // 1 header
        0x10, 5,                                     // 2 watch_id
        0x5a, 2, 0x08, 1,                            // 11 events: type = DELETE
    ];
    assert_eq!(resp.encode_to_vec(), want);
}

#[test]
fn key_value_decodes_from_etcd_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x0a, 1, b'k',  // 1 key
        0x10, 2,        // 2 create_revision
        0x18, 3,        // 3 mod_revision
        0x20, 4,        // 4 version
        0x2a, 1, b'v',  // 5 value
        0x30, 6,        // 6 lease
    ];
    let kv = KeyValue::decode(bytes).expect("hand-made bytes decode");
    assert_eq!(
        kv,
        KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 6,
        }
    );
}

#[test]
fn status_response_has_the_3_6_fields_at_11_to_13() {
    let resp = StatusResponse {
        storage_version: "3.6.0".to_owned(),
        db_size_quota: 5,
        downgrade_info: Some(cairn_proto::etcdserverpb::DowngradeInfo {
            enabled: true,
            target_version: String::new(),
        }),
        db_size_in_use: 9,
        is_learner: true,
        ..StatusResponse::default()
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x48, 9,                                        // 9 dbSizeInUse
        0x50, 1,                                        // 10 isLearner
        0x5a, 5, b'3', b'.', b'6', b'.', b'0',          // 11 storageVersion
        0x60, 5,                                        // 12 dbSizeQuota
        0x6a, 2, 0x08, 1,                               // 13 downgradeInfo.enabled
    ];
    assert_eq!(resp.encode_to_vec(), want);
}
