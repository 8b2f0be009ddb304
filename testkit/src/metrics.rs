//! Reading values out of Prometheus text exposition, whatever the label order.

/// The value of the series `name` whose labels include every pair in `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let present: Vec<(&str, &str)> = label_text
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim_matches('"')))
                .collect();
            labels
                .iter()
                .all(|wanted| present.contains(wanted))
                .then(|| value.parse().ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_series_regardless_of_label_order() {
        let text = "# HELP x y\nshop_requests_total{endpoint=\"get\",service=\"product\",instance=\"p1\"} 4\nshop_requests_total{endpoint=\"list\",service=\"product\"} 1\nplain 2.5\n";
        assert_eq!(
            super::value(
                text,
                "shop_requests_total",
                &[("instance", "p1"), ("endpoint", "get")]
            ),
            Some(4.0)
        );
        assert_eq!(
            super::value(text, "shop_requests_total", &[("endpoint", "list")]),
            Some(1.0)
        );
        assert_eq!(super::value(text, "plain", &[]), Some(2.5));
        assert_eq!(
            super::value(text, "shop_requests_total", &[("endpoint", "create")]),
            None
        );
    }
}
