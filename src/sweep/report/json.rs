//! `results.json`: the [`SweepResult`] exactly as the model serializes it,
//! pretty-printed, so any tool (or a later `ferrocorn` run) can read the
//! whole sweep back.

use crate::sweep::model::SweepResult;

/// The pretty JSON text, ending with a newline.
pub(crate) fn render(result: &SweepResult) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(result)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::fixture;

    #[test]
    fn the_json_reads_back_as_the_same_result() {
        for result in [fixture::sweep(), fixture::all_failed()] {
            let text = render(&result).expect("json");
            let back: SweepResult = serde_json::from_str(&text).expect("parses");
            assert_eq!(back, result);
        }
    }

    #[test]
    fn the_json_is_pretty() {
        let text = render(&fixture::sweep()).expect("json");
        assert!(
            text.starts_with("{\n  \"name\": \"workers-vs-gunicorn\""),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
    }
}
