//! The RPC API's default answer format. ECS answers XML unless the request
//! asks for JSON (`Format=JSON`, or V3's `Accept: application/json`), so a
//! client that forgets to ask must see XML here too.
//!
//! Shape (the documented samples, doc-detail/67698 and the BSS "response
//! structure" page, whose error sample carries the single-quoted
//! declaration used here): the root is `<{Action}Response>` (or `<Error>`
//! with RequestId, HostId, Code, Message in that order), an object's keys
//! become child elements, and a list under key `K` becomes one `<K>` element
//! per item, so `{"Tags": {"Tag": [a, b]}}` reads
//! `<Tags><Tag>a</Tag><Tag>b</Tag></Tags>` (the list convention is a guess
//! from the models' `Outer.Inner` nesting).

use serde_json::Value;

/// The XML declaration ECS's gateway starts answers with.
pub const DECLARATION: &str = "<?xml version='1.0' encoding='UTF-8'?>";

/// Renders `body` (a JSON object) as an XML document with root `root`.
pub fn render(root: &str, body: &Value) -> String {
    let mut out = String::from(DECLARATION);
    element(&mut out, root, body);
    out
}

/// Order of an `<Error>`'s children in the vendor's samples (ECS "Response
/// results", doc-detail/67698); other keys follow alphabetically.
const ERROR_ORDER: [&str; 5] = ["RequestId", "HostId", "Code", "Message", "Recommend"];

/// Renders an error body as `<Error>` with its children in the documented order.
pub fn render_error(body: &Value) -> String {
    let mut out = String::from(DECLARATION);
    out.push_str("<Error>");
    if let Value::Object(m) = body {
        for k in ERROR_ORDER {
            if let Some(v) = m.get(k) {
                element(&mut out, k, v);
            }
        }
        for (k, v) in m.iter().filter(|(k, _)| !ERROR_ORDER.contains(&k.as_str())) {
            element(&mut out, k, v);
        }
    }
    out.push_str("</Error>");
    out
}

fn element(out: &mut String, name: &str, v: &Value) {
    match v {
        Value::Array(items) => {
            for i in items {
                element(out, name, i);
            }
        }
        Value::Object(m) => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            for (k, child) in m {
                element(out, k, child);
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        scalar => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            match scalar {
                Value::String(s) => escape(out, s),
                Value::Null => {}
                other => out.push_str(&other.to_string()),
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Whether a request asked for JSON: a `Format` parameter equal to `JSON`
/// (any case; V1 common parameter, also honoured on V3), or an `Accept`
/// header naming `application/json` (what the official SDK sends on V3).
pub fn wants_json(params: &[(String, String)], headers: &[(String, String)]) -> bool {
    let format = params
        .iter()
        .find(|(k, _)| k == "Format")
        .map(|(_, v)| v.as_str());
    if let Some(f) = format {
        if f.eq_ignore_ascii_case("json") {
            return true;
        }
        if f.eq_ignore_ascii_case("xml") {
            return false;
        }
    }
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("accept")
            && v.split(',').any(|m| {
                m.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_repeat_their_key_and_text_is_escaped() {
        let x = render(
            "DescribeSnapshotGroupsResponse",
            &json!({"RequestId": "r", "SnapshotGroups": {"SnapshotGroup": [
                {"Name": "a<&>'\"", "Tags": {"Tag": []}},
                {"Available": true, "Size": 5}
            ]}}),
        );
        assert_eq!(
            x,
            "<?xml version='1.0' encoding='UTF-8'?><DescribeSnapshotGroupsResponse>\
             <RequestId>r</RequestId><SnapshotGroups>\
             <SnapshotGroup><Name>a&lt;&amp;&gt;&apos;&quot;</Name><Tags></Tags></SnapshotGroup>\
             <SnapshotGroup><Available>true</Available><Size>5</Size></SnapshotGroup>\
             </SnapshotGroups></DescribeSnapshotGroupsResponse>"
        );
    }

    #[test]
    fn error_children_follow_the_documented_order() {
        let x = render_error(&json!({
            "Code": "C", "HostId": "h", "Message": "m", "Recommend": "r", "RequestId": "id"
        }));
        assert_eq!(
            x,
            "<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>id</RequestId>\
             <HostId>h</HostId><Code>C</Code><Message>m</Message><Recommend>r</Recommend></Error>"
        );
    }

    #[test]
    fn json_only_when_asked() {
        let p = |f: &str| vec![("Format".to_string(), f.to_string())];
        let h = |a: &str| vec![("accept".to_string(), a.to_string())];
        assert!(wants_json(&p("json"), &[]));
        assert!(wants_json(&p("JSON"), &[]));
        assert!(!wants_json(&p("XML"), &h("application/json")));
        assert!(!wants_json(&[], &[]));
        assert!(!wants_json(&[], &h("*/*")));
        assert!(!wants_json(&[], &h("text/xml")));
        assert!(wants_json(&[], &h("text/html, application/json;q=0.9")));
        assert!(wants_json(
            &[],
            &[("Accept".into(), "application/json".into())]
        ));
    }
}
