//! Every signature vector of the reference (official doc examples and the
//! SDK-generated V1 / V3-minimal-headers vectors) reproduced byte for byte.

use appsnap::cloud::secret::Secret;
use appsnap::cloud::sign::{self, RequestParts, SigningKey};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sig_vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn official_doc_vectors() {
    let all = vectors();
    let docs = all["official_doc_vectors"].as_array().unwrap();
    assert_eq!(docs.len(), 4);
    for v in docs {
        let id = s(&v["id"]);
        let secret = Secret::new(s(&v["access_key_secret"]));
        let method = s(&v["method"]);
        if s(&v["scheme"]).starts_with("RPC V1") {
            let params = pairs(&v["signed_params"]);
            let sts = sign::v1_string_to_sign(method, &params);
            assert_eq!(sts, s(&v["sdk_string_to_sign"]), "{id}");
            if let Some(e) = v.get("expected_string_to_sign") {
                assert_eq!(sts, s(e), "{id}");
            }
            let sig = sign::v1_signature(&secret, &sts);
            assert_eq!(sig, s(&v["sdk_signature"]), "{id}");
            if let Some(e) = v.get("expected_signature") {
                assert_eq!(sig, s(e), "{id}");
            }
        } else {
            let query = sign::canonical_query(&pairs(&v["query"]));
            let headers = pairs(&v["headers"]);
            let (cr, signed) =
                sign::v3_canonical_request(method, &query, &headers, sign::EMPTY_PAYLOAD_SHA256);
            assert_eq!(cr, s(&v["sdk_canonical_request"]), "{id}");
            let (sts, sig) = sign::v3_signature(&secret, &cr);
            assert_eq!(
                sts,
                format!(
                    "ACS3-HMAC-SHA256\n{}",
                    s(&v["expected_hashed_canonical_request"])
                ),
                "{id}"
            );
            assert_eq!(sig, s(&v["expected_signature"]), "{id}");
            let auth = format!(
                "ACS3-HMAC-SHA256 Credential={},SignedHeaders={signed},Signature={sig}",
                s(&v["access_key_id"])
            );
            assert_eq!(auth, s(&v["expected_authorization"]), "{id}");
        }
    }
}

struct Input {
    method: String,
    host: String,
    action: String,
    version: String,
    params: Vec<(String, String)>,
    timestamp: String,
    nonce: String,
    ak: String,
    secret: Secret,
    token: Option<Secret>,
}

fn input(v: &Value) -> Input {
    let i = &v["input"];
    Input {
        method: s(&i["method"]).into(),
        host: s(&i["host"]).into(),
        action: s(&i["action"]).into(),
        version: s(&i["version"]).into(),
        params: pairs(&v["flat_params"]),
        timestamp: s(&i["timestamp"]).into(),
        nonce: s(&i["nonce"]).into(),
        ak: s(&i["access_key_id"]).into(),
        secret: Secret::new(s(&i["access_key_secret"])),
        token: i["security_token"].as_str().map(Secret::new),
    }
}

fn parts(i: &Input) -> RequestParts<'_> {
    RequestParts {
        method: &i.method,
        host: &i.host,
        action: &i.action,
        version: &i.version,
        params: &i.params,
        timestamp: &i.timestamp,
        nonce: &i.nonce,
    }
}

fn key(i: &Input) -> SigningKey<'_> {
    SigningKey {
        access_key_id: &i.ak,
        access_key_secret: &i.secret,
        security_token: i.token.as_ref(),
    }
}

#[test]
fn sdk_vectors_v3_minimal_headers() {
    let all = vectors();
    let vs = all["sdk_vectors"].as_array().unwrap();
    assert_eq!(vs.len(), 9);
    for v in vs {
        let id = s(&v["id"]);
        let i = input(v);
        let e = &v["v3_acs3_hmac_sha256_minimal_headers"];
        let got = sign::sign_v3(&parts(&i), &key(&i));
        assert_eq!(got.canonical_query, s(&e["canonical_query_string"]), "{id}");
        assert_eq!(got.canonical_request, s(&e["canonical_request"]), "{id}");
        assert_eq!(got.string_to_sign, s(&e["string_to_sign"]), "{id}");
        assert_eq!(got.signed_headers, s(&e["signed_headers"]), "{id}");
        assert_eq!(got.signature, s(&e["signature"]), "{id}");
        assert_eq!(got.authorization, s(&e["authorization"]), "{id}");
        // The headers we send are exactly the vector's, minus host (set by the
        // HTTP client), plus authorization.
        let mut want = pairs(&e["headers"]);
        want.retain(|(k, _)| k != "host");
        want.push(("authorization".into(), s(&e["authorization"]).into()));
        want.sort();
        let mut have = got.headers.clone();
        have.sort();
        assert_eq!(have, want, "{id}");
    }
}

#[test]
fn sdk_vectors_v1_rpc() {
    let all = vectors();
    for v in all["sdk_vectors"].as_array().unwrap() {
        let id = s(&v["id"]);
        let i = input(v);
        let e = &v["v1_rpc_hmac_sha1"];
        let got = sign::sign_v1(&parts(&i), &key(&i));
        let mut want = pairs(&e["signed_params"]);
        want.sort();
        let mut have = got.signed_params.clone();
        have.sort();
        assert_eq!(have, want, "{id}");
        assert_eq!(
            got.canonical_query,
            s(&e["canonicalized_query_string"]),
            "{id}"
        );
        assert_eq!(got.string_to_sign, s(&e["string_to_sign"]), "{id}");
        assert_eq!(got.signature, s(&e["signature"]), "{id}");
        assert!(got.wire_query.ends_with(&format!(
            "&Signature={}",
            sign::percent_encode(&got.signature)
        )));
    }
}
