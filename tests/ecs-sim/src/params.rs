//! Typed access to RPC operation parameters: scalars, `.N` lists, `Tag.N.*`
//! pairs, JSON-array strings and paging, with the vendor's errors.

use crate::error::ApiError;

/// Operation parameters of one request.
#[derive(Debug, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Last value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required, non-empty parameter.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::missing(name))
    }

    /// `name.1`, `name.2`, ... in index order; indices must be 1..=max.
    pub fn list(&self, name: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let prefix = format!("{name}.");
        let mut items: Vec<(usize, String)> = Vec::new();
        for (k, v) in &self.0 {
            let Some(idx) = k.strip_prefix(&prefix) else {
                continue;
            };
            let n: usize = idx
                .parse()
                .map_err(|_| ApiError::invalid(format!("The parameter {k} is invalid.")))?;
            if n == 0 || n > max {
                return Err(ApiError::invalid(format!(
                    "The parameter {k} is out of range 1..{max}."
                )));
            }
            items.push((n, v.clone()));
        }
        items.sort_by_key(|(n, _)| *n);
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs, in index order.
    pub fn tags(&self) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let mut out: std::collections::BTreeMap<usize, (Option<String>, Option<String>)> =
            Default::default();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix("Tag.") else {
                continue;
            };
            let (idx, field) = rest
                .split_once('.')
                .ok_or_else(|| ApiError::invalid(format!("The parameter {k} is invalid.")))?;
            let n: usize = idx
                .parse()
                .map_err(|_| ApiError::invalid(format!("The parameter {k} is invalid.")))?;
            if n == 0 {
                return Err(ApiError::invalid(format!("The parameter {k} is invalid.")));
            }
            let e = out.entry(n).or_default();
            match field {
                "Key" => e.0 = Some(v.clone()),
                "Value" => e.1 = Some(v.clone()),
                _ => return Err(ApiError::invalid(format!("The parameter {k} is invalid."))),
            }
        }
        out.into_values()
            .map(|(k, v)| {
                let k = k.ok_or_else(|| {
                    ApiError::new(
                        400,
                        "InvalidTagKey.Malformed",
                        "The specified Tag.n.Key is not valid.",
                    )
                })?;
                Ok((k, v))
            })
            .collect()
    }

    /// A JSON array of strings (`DiskIds`, `SnapshotIds`), at most `max` items.
    pub fn json_list(&self, name: &str, max: usize) -> Result<Option<Vec<String>>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let v: Vec<String> = serde_json::from_str(raw).map_err(|_| {
            ApiError::invalid(format!(
                "The parameter {name} must be a JSON array of strings."
            ))
        })?;
        if v.len() > max {
            return Err(ApiError::invalid(format!(
                "The parameter {name} has more than {max} items."
            )));
        }
        Ok(Some(v))
    }

    /// `MaxResults` within `min..=max`, `default` when absent.
    pub fn max_results(&self, min: usize, max: usize, default: usize) -> Result<usize, ApiError> {
        match self.get("MaxResults") {
            None | Some("") => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::new(
                    400,
                    "InvalidParameter.MaxResults",
                    format!("The specified MaxResults {s} is out of range {min}..{max}."),
                )),
            },
        }
    }

    /// `MaxResults` as DescribeDisks treats it: a number out of range is
    /// clamped into `min..=max` (alibaba-api.md §0 item 12), not refused;
    /// only a non-number is `InvalidParameter.MaxResults`.
    pub fn max_results_clamped(
        &self,
        min: usize,
        max: usize,
        default: usize,
    ) -> Result<usize, ApiError> {
        match self.get("MaxResults") {
            None | Some("") => Ok(default),
            Some(s) => s.parse::<usize>().map(|n| n.clamp(min, max)).map_err(|_| {
                ApiError::new(
                    400,
                    "InvalidParameter.MaxResults",
                    format!("The specified MaxResults {s} is not a number."),
                )
            }),
        }
    }

    /// Start offset from `NextToken` (opaque to clients: `nt-<offset>`).
    pub fn next_token(&self) -> Result<usize, ApiError> {
        match self.get("NextToken") {
            None | Some("") => Ok(0),
            Some(t) => t
                .strip_prefix("nt-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "InvalidParameter.NextToken",
                        "The specified NextToken is invalid.",
                    )
                }),
        }
    }
}

/// One page of `items` and the token for the next (`""` on the last page).
pub fn page<T: Clone>(items: &[T], start: usize, size: usize) -> (Vec<T>, String) {
    let end = (start + size).min(items.len());
    let slice = if start < items.len() {
        items[start..end].to_vec()
    } else {
        Vec::new()
    };
    let token = if end < items.len() {
        format!("nt-{end}")
    } else {
        String::new()
    };
    (slice, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[(&str, &str)]) -> Params {
        Params(
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn lists_sort_numerically_and_check_range() {
        let x = p(&[("DiskId.10", "j"), ("DiskId.2", "b"), ("DiskId.1", "a")]);
        assert_eq!(x.list("DiskId", 128).unwrap(), ["a", "b", "j"]);
        assert!(x.list("DiskId", 5).is_err());
        assert!(p(&[("DiskId.0", "a")]).list("DiskId", 5).is_err());
        assert!(p(&[("DiskId.x", "a")]).list("DiskId", 5).is_err());
    }

    #[test]
    fn tags_pair_up_by_index() {
        let x = p(&[("Tag.2.Key", "b"), ("Tag.1.Value", "1"), ("Tag.1.Key", "a")]);
        assert_eq!(
            x.tags().unwrap(),
            [
                ("a".to_string(), Some("1".to_string())),
                ("b".to_string(), None)
            ]
        );
        assert!(p(&[("Tag.1.Value", "v")]).tags().is_err());
    }

    #[test]
    fn paging() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(page(&items, 0, 2), (vec![0, 1], "nt-2".to_string()));
        assert_eq!(page(&items, 4, 2), (vec![4], String::new()));
        assert_eq!(page(&items, 9, 2), (vec![], String::new()));
        assert_eq!(p(&[("NextToken", "nt-4")]).next_token().unwrap(), 4);
        assert!(p(&[("NextToken", "4")]).next_token().is_err());
    }
}
