//! The server's verifier and the test client's signer, each checked on its
//! own against the reference vectors (published examples + SDK-generated).

use ecs_sim::pct::form_decode;
use ecs_sim::testkit::sign::{sign_v1_params, sign_v3_headers};
use ecs_sim::testkit::Creds;
use ecs_sim::verify;
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("fixtures/sig_vectors.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn wire_query(url: &str) -> Vec<(String, String)> {
    form_decode(url.split_once('?').map(|x| x.1).unwrap_or(""))
}

fn secret(input: &Value) -> String {
    input["access_key_secret"].as_str().unwrap().to_string()
}

#[test]
fn verifier_reproduces_published_v1_vectors() {
    let v = vectors();
    let mut n = 0;
    for d in v["official_doc_vectors"].as_array().unwrap() {
        if d["scheme"] != "RPC V1 HMAC-SHA1" {
            continue;
        }
        let params = pairs(&d["signed_params"]);
        let method = d["method"].as_str().unwrap();
        let sts = verify::v1_string_to_sign(method, &params);
        assert_eq!(
            sts,
            d["sdk_string_to_sign"].as_str().unwrap(),
            "{}",
            d["id"]
        );
        let sig = verify::v1_signature(d["access_key_secret"].as_str().unwrap(), &sts);
        assert_eq!(sig, d["sdk_signature"].as_str().unwrap(), "{}", d["id"]);
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn verifier_reproduces_published_v3_vector() {
    let v = vectors();
    let d = v["official_doc_vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "doc_v3_run_instances")
        .unwrap();
    let headers = pairs(&d["headers"]);
    let signed: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
    let canon = verify::v3_canonical_request(
        "POST",
        "/",
        &pairs(&d["query"]),
        &headers,
        &signed,
        &verify::sha256_hex(b""),
    );
    assert_eq!(canon, d["sdk_canonical_request"].as_str().unwrap());
    assert_eq!(
        verify::sha256_hex(canon.as_bytes()),
        d["expected_hashed_canonical_request"].as_str().unwrap()
    );
    let (_, sig) = verify::v3_sign(d["access_key_secret"].as_str().unwrap(), &canon);
    assert_eq!(sig, d["expected_signature"].as_str().unwrap());
    let a = verify::parse_authorization(d["expected_authorization"].as_str().unwrap()).unwrap();
    assert_eq!(a.access_key_id, "YourAccessKeyId");
    assert_eq!(a.signature, sig);
}

#[test]
fn verifier_accepts_every_sdk_vector_as_received_on_the_wire() {
    let v = vectors();
    for vec in v["sdk_vectors"].as_array().unwrap() {
        let id = vec["id"].as_str().unwrap();
        let input = &vec["input"];
        let method = input["method"].as_str().unwrap();
        let secret = secret(input);

        // V1: what the server decodes from the wire URL re-signs to the same bytes.
        let v1 = &vec["v1_rpc_hmac_sha1"];
        let mut wire = wire_query(v1["wire_url"].as_str().unwrap());
        let sent_sig = wire
            .iter()
            .find(|(k, _)| k == "Signature")
            .map(|(_, v)| v.clone())
            .unwrap();
        wire.retain(|(k, _)| k != "Signature");
        let sts = verify::v1_string_to_sign(method, &wire);
        assert_eq!(sts, v1["string_to_sign"].as_str().unwrap(), "{id} v1 sts");
        assert_eq!(verify::v1_signature(&secret, &sts), sent_sig, "{id} v1 sig");
        assert_eq!(sent_sig, v1["signature"].as_str().unwrap(), "{id}");

        // Legacy core SDK (Format=JSON, empty SignatureType=).
        let legacy = &vec["v1_legacy_aliyunsdkcore"];
        let sent = pairs(&legacy["sent_params"]);
        let sent: Vec<(String, String)> =
            sent.into_iter().filter(|(k, _)| k != "Signature").collect();
        let sts = verify::v1_string_to_sign(method, &sent);
        assert_eq!(
            sts,
            legacy["string_to_sign"].as_str().unwrap(),
            "{id} legacy"
        );
        assert_eq!(
            verify::v1_signature(&secret, &sts),
            legacy["signature"].as_str().unwrap(),
            "{id} legacy sig"
        );

        // V3, both header sets, query decoded from the wire URL.
        for set in [
            "v3_acs3_hmac_sha256_minimal_headers",
            "v3_acs3_hmac_sha256_sdk_headers",
        ] {
            let x = &vec[set];
            let headers = pairs(&x["headers"]);
            let query = wire_query(x["wire_url"].as_str().unwrap());
            let a = verify::parse_authorization(x["authorization"].as_str().unwrap()).unwrap();
            let canon = verify::v3_canonical_request(
                method,
                "/",
                &query,
                &headers,
                &a.signed_headers,
                &verify::sha256_hex(b""),
            );
            assert_eq!(
                canon,
                x["canonical_request"].as_str().unwrap(),
                "{id} {set}"
            );
            let (sts, sig) = verify::v3_sign(&secret, &canon);
            assert_eq!(sts, x["string_to_sign"].as_str().unwrap(), "{id} {set}");
            assert!(verify::ct_eq(&sig, &a.signature), "{id} {set} signature");
        }
    }
}

#[test]
fn one_byte_change_to_any_signed_v1_parameter_changes_the_signature() {
    let v = vectors();
    for vec in v["sdk_vectors"].as_array().unwrap() {
        let v1 = &vec["v1_rpc_hmac_sha1"];
        let params = pairs(&v1["signed_params"]);
        let good = v1["signature"].as_str().unwrap();
        let secret = secret(&vec["input"]);
        for i in 0..params.len() {
            let mut p = params.clone();
            p[i].1.push('x');
            let sig = verify::v1_signature(&secret, &verify::v1_string_to_sign("POST", &p));
            assert_ne!(sig, good, "{} {}", vec["id"], params[i].0);
        }
    }
}

#[test]
fn test_signer_matches_vectors_v1_and_v3() {
    let v = vectors();
    for vec in v["sdk_vectors"].as_array().unwrap() {
        let id = vec["id"].as_str().unwrap();
        let input = &vec["input"];
        let v1 = &vec["v1_rpc_hmac_sha1"];
        let (sig, sts) = sign_v1_params("POST", &pairs(&v1["signed_params"]), &secret(input));
        assert_eq!(sts, v1["string_to_sign"].as_str().unwrap(), "{id}");
        assert_eq!(sig, v1["signature"].as_str().unwrap(), "{id}");

        let creds = Creds {
            access_key_id: input["access_key_id"].as_str().unwrap().into(),
            secret: secret(input),
            token: input["security_token"].as_str().map(str::to_string),
        };
        for set in [
            "v3_acs3_hmac_sha256_minimal_headers",
            "v3_acs3_hmac_sha256_sdk_headers",
        ] {
            let x = &vec[set];
            let s = sign_v3_headers(
                "POST",
                &pairs(&vec["flat_params"]),
                b"",
                pairs(&x["headers"]),
                &creds,
            );
            assert_eq!(
                s.canonical_request,
                x["canonical_request"].as_str().unwrap(),
                "{id} {set}"
            );
            assert_eq!(s.signature, x["signature"].as_str().unwrap(), "{id} {set}");
            let authz = s
                .headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .unwrap();
            assert_eq!(authz.1, x["authorization"].as_str().unwrap(), "{id} {set}");
        }
    }
}

#[test]
fn percent_encoding_table() {
    use ecs_sim::pct::encode;
    use ecs_sim::testkit::sign::rfc3986;
    for (raw, want) in [
        (" ", "%20"),
        ("*", "%2A"),
        ("~", "~"),
        ("/", "%2F"),
        ("+=&", "%2B%3D%26"),
        ("'()!", "%27%28%29%21"),
        ("%:,;", "%25%3A%2C%3B"),
        ("[]\"", "%5B%5D%22"),
        ("备", "%E5%A4%87"),
        ("ü", "%C3%BC"),
    ] {
        assert_eq!(encode(raw), want);
        assert_eq!(rfc3986(raw), want);
    }
}
