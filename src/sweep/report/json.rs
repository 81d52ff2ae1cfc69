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
