//! The reasons a curator gives when rejecting a recommendation in Studio.
//!
//! Studio stores the *labels* of the ticked checkboxes, in checkbox order, in the curator's UI
//! language, joined with `", "` (`feedback_reason`); an untouched form leaves `"REJECTED"`.
//! One English label itself contains `", "`, so the string is parsed by matching known labels,
//! never by splitting on commas. What no known label matches is kept raw as `unknown`.
//!
//! The built-in labels are Studio's English strings (`searchRecommendationsStrings.js`) and the
//! one Spanish label documented with the export format; Studio's other locales (ar, es_ES,
//! fr_FR, hi_IN, pt_BR) are added at run time from its `contentcuration-messages.json` files
//! (`lecr feedback import --labels FILE`). See `docs/studio-feedback.md`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What a rejection reason means (the checkbox behind a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NotSuitableForCurriculum,
    NotRelated,
    NotSuitableForCulture,
    NotSpecific,
    TooAdvanced,
    TooBasic,
    NotWellMade,
    AlreadyUsed,
    Other,
    /// Text that no known label matches (another locale, an older wording).
    Unknown,
}

impl Reason {
    /// Checkbox order, as Studio stores them; `Unknown` last.
    pub const ALL: [Reason; 10] = [
        Self::NotSuitableForCurriculum,
        Self::NotRelated,
        Self::NotSuitableForCulture,
        Self::NotSpecific,
        Self::TooAdvanced,
        Self::TooBasic,
        Self::NotWellMade,
        Self::AlreadyUsed,
        Self::Other,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotSuitableForCurriculum => "not_suitable_for_curriculum",
            Self::NotRelated => "not_related",
            Self::NotSuitableForCulture => "not_suitable_for_culture",
            Self::NotSpecific => "not_specific",
            Self::TooAdvanced => "too_advanced",
            Self::TooBasic => "too_basic",
            Self::NotWellMade => "not_well_made",
            Self::AlreadyUsed => "already_used",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }

    /// The key of the label in Studio's message files (`SearchRecommendationsStrings.<key>`).
    fn studio_key(self) -> Option<&'static str> {
        Some(match self {
            Self::NotSuitableForCurriculum => "notSuitableForCurriculumLabel",
            Self::NotRelated => "notRelatedToSubjectLabel",
            Self::NotSuitableForCulture => "notSuitableForCulturalBackgroundLabel",
            Self::NotSpecific => "notSpecificLearningActivityLabel",
            Self::TooAdvanced => "tooAdvancedForLearnersLabel",
            Self::TooBasic => "tooBasicForLearnersLabel",
            Self::NotWellMade => "resourceNotWellMadeLabel",
            Self::AlreadyUsed => "alreadyUsedResourceLabel",
            Self::Other => "otherLabel",
            Self::Unknown => return None,
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Studio's English labels (`frontend/shared/strings/searchRecommendationsStrings.js`).
pub(crate) const ENGLISH: [(Reason, &str); 9] = [
    (
        Reason::NotSuitableForCurriculum,
        "Not suitable for the curriculum I am using",
    ),
    (
        Reason::NotRelated,
        "Not related to the subject or knowledge area I am trying to find resources for",
    ),
    (
        Reason::NotSuitableForCulture,
        "Not suitable for the cultural backgrounds and experiences of learners",
    ),
    (
        Reason::NotSpecific,
        "Not the type of learning activity I'm looking for (e.g. document instead of video, etc.)",
    ),
    (
        Reason::TooAdvanced,
        "Too advanced for the knowledge level of learners I'm looking for",
    ),
    (
        Reason::TooBasic,
        "Too basic for the knowledge level of learners I'm looking for",
    ),
    (
        Reason::NotWellMade,
        "The resource doesn't look or sound well-made enough for use",
    ),
    (
        Reason::AlreadyUsed,
        "I already used this resource in my channel",
    ),
    (Reason::Other, "Other"),
];

/// es_ES gives too_advanced and too_basic the same string, so a Spanish rejection with it
/// cannot say which of the two the curator meant.
const SPANISH_TOO_ADVANCED_OR_BASIC: &str =
    "Demasiado básico para el nivel de conocimiento de los estudiantes que estoy buscando";

/// One known label: its text, the reasons it may mean (two where a locale gave two checkboxes
/// the same text), and the locale it came from.
#[derive(Debug, Clone)]
struct Label {
    text: String,
    reasons: Vec<Reason>,
    locales: Vec<String>,
}

/// The labels the parser knows, longest first (so a label that starts another is tried last).
#[derive(Debug, Clone)]
pub struct Labels {
    labels: Vec<Label>,
}

/// A parsed `feedback_reason`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Each matched label's reasons, in the order found. A label that means two reasons
    /// (es_ES too_advanced/too_basic) contributes both.
    pub reasons: Vec<Reason>,
    /// Labels that could mean more than one reason, as `a|b`.
    pub ambiguous: Vec<String>,
    /// Text no known label matched, raw (joined with `", "` when in several pieces).
    pub unknown: Option<String>,
}

impl Default for Labels {
    fn default() -> Self {
        let mut l = Labels { labels: Vec::new() };
        for (r, text) in ENGLISH {
            l.add("en", r, text);
        }
        l.add("es_ES", Reason::TooAdvanced, SPANISH_TOO_ADVANCED_OR_BASIC);
        l.add("es_ES", Reason::TooBasic, SPANISH_TOO_ADVANCED_OR_BASIC);
        l
    }
}

/// A labels file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a Studio message file (a JSON object of strings): {message}")]
    Json { path: String, message: String },
    #[error(
        "{path}: has none of the `SearchRecommendationsStrings.*Label` keys of Studio's \
         rejection form (is it `contentcuration/locale/<locale>/LC_MESSAGES/\
         contentcuration-messages.json` from a Studio checkout of 2025-07 or later?)"
    )]
    NoLabels { path: String },
}

impl Labels {
    /// Adds one label. A text already known for another reason becomes ambiguous.
    pub fn add(&mut self, locale: &str, reason: Reason, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if let Some(l) = self.labels.iter_mut().find(|l| l.text == text) {
            if !l.reasons.contains(&reason) {
                l.reasons.push(reason);
                l.reasons.sort();
            }
            if !l.locales.iter().any(|x| x == locale) {
                l.locales.push(locale.to_string());
            }
        } else {
            self.labels.push(Label {
                text: text.to_string(),
                reasons: vec![reason],
                locales: vec![locale.to_string()],
            });
        }
        self.labels
            .sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.text.cmp(&b.text)));
    }

    /// Adds the labels of one of Studio's message files
    /// (`contentcuration/locale/<locale>/LC_MESSAGES/contentcuration-messages.json`); the
    /// locale is the folder above `LC_MESSAGES`, else the file name. Returns how many labels.
    pub fn add_studio_messages(&mut self, path: &Path) -> Result<usize, LabelsError> {
        let shown = path.display().to_string();
        let raw = std::fs::read_to_string(path).map_err(|source| LabelsError::Io {
            path: shown.clone(),
            source,
        })?;
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&raw).map_err(|e| LabelsError::Json {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let locale = path
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "LC_MESSAGES"))
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .unwrap_or_else(|| path.file_stem().unwrap_or_default())
            .to_string_lossy()
            .into_owned();
        let mut n = 0;
        for r in Reason::ALL {
            let Some(key) = r.studio_key() else { continue };
            if let Some(serde_json::Value::String(text)) =
                map.get(&format!("SearchRecommendationsStrings.{key}"))
            {
                self.add(&locale, r, text);
                n += 1;
            }
        }
        if n == 0 {
            return Err(LabelsError::NoLabels { path: shown });
        }
        Ok(n)
    }

    /// Labels that mean more than one reason, with their locales (for the report).
    pub fn ambiguities(&self) -> Vec<(String, Vec<Reason>, Vec<String>)> {
        self.labels
            .iter()
            .filter(|l| l.reasons.len() > 1)
            .map(|l| (l.text.clone(), l.reasons.clone(), l.locales.clone()))
            .collect()
    }

    /// The locales the labels come from.
    pub fn locales(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .labels
            .iter()
            .flat_map(|l| l.locales.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Parses a REJECTED row's `feedback_reason`: `"REJECTED"` (or nothing) means no reasons.
    pub fn parse(&self, feedback_reason: &str) -> Parsed {
        let s = feedback_reason.trim();
        let mut out = Parsed::default();
        if s.is_empty() || s == "REJECTED" {
            return out;
        }
        let mut unknown: Vec<&str> = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(l) = self.label_at(rest) {
                out.reasons.extend(&l.reasons);
                if l.reasons.len() > 1 {
                    let names: Vec<&str> = l.reasons.iter().map(|r| r.as_str()).collect();
                    out.ambiguous.push(names.join("|"));
                }
                rest = &rest[l.text.len()..];
            } else {
                // Unknown text runs to the next ", " that a known label follows, or the end.
                let mut end = rest.len();
                let mut from = 0;
                while let Some(i) = rest[from..].find(", ") {
                    let at = from + i;
                    if self.label_at(&rest[at + 2..]).is_some() {
                        end = at;
                        break;
                    }
                    from = at + 2;
                }
                unknown.push(rest[..end].trim());
                rest = &rest[end..];
            }
            rest = rest.strip_prefix(", ").unwrap_or(rest).trim_start();
        }
        if !unknown.is_empty() {
            out.reasons.push(Reason::Unknown);
            out.unknown = Some(unknown.join(", "));
        }
        out
    }

    /// The longest known label that `s` starts with, ending at the end or at `", "`.
    fn label_at(&self, s: &str) -> Option<&Label> {
        self.labels.iter().find(|l| {
            s.starts_with(l.text.as_str()) && {
                let after = &s[l.text.len()..];
                after.is_empty() || after.starts_with(", ") || after.trim().is_empty()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason::*;

    #[test]
    fn labels_are_matched_whole_even_the_one_with_a_comma() {
        let l = Labels::default();
        let s = "Not the type of learning activity I'm looking for (e.g. document instead of \
                 video, etc.), Too basic for the knowledge level of learners I'm looking for, Other";
        let p = l.parse(s);
        assert_eq!(p.reasons, vec![NotSpecific, TooBasic, Other]);
        assert_eq!(p.unknown, None);
        // Splitting on ", " would have made four pieces, two of them unknown.
        assert_eq!(s.split(", ").count(), 4);
    }

    #[test]
    fn no_reason_and_unknown_text() {
        let l = Labels::default();
        assert_eq!(l.parse("REJECTED"), Parsed::default());
        assert_eq!(l.parse(""), Parsed::default());
        let p = l.parse("Pas adapté, avec virgule, Other");
        assert_eq!(p.reasons, vec![Other, Unknown]);
        assert_eq!(p.unknown.as_deref(), Some("Pas adapté, avec virgule"));
        let p = l.parse("Other, Nicht passend");
        assert_eq!(p.reasons, vec![Other, Unknown]);
        assert_eq!(p.unknown.as_deref(), Some("Nicht passend"));
        // A known label's text as the start of an unknown one is not a match.
        let p = l.parse("Otherwise fine");
        assert_eq!(p.reasons, vec![Unknown]);
    }

    #[test]
    fn the_spanish_label_for_two_reasons_is_ambiguous() {
        let l = Labels::default();
        let p = l.parse(SPANISH_TOO_ADVANCED_OR_BASIC);
        assert_eq!(p.reasons, vec![TooAdvanced, TooBasic]);
        assert_eq!(p.ambiguous, vec!["too_advanced|too_basic"]);
        let amb = l.ambiguities();
        assert_eq!(amb.len(), 1);
        assert_eq!(amb[0].2, vec!["es_ES"]);
    }

    #[test]
    fn studio_message_files_add_a_locale() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir
            .path()
            .join("fr_FR/LC_MESSAGES/contentcuration-messages.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            r#"{"Account.x": "y",
                "SearchRecommendationsStrings.otherLabel": "Autre",
                "SearchRecommendationsStrings.notSpecificLearningActivityLabel":
                    "Pas le type d'activité que je cherche (p. ex. document, vidéo, etc.)"}"#,
        )
        .unwrap();
        let mut l = Labels::default();
        assert_eq!(l.add_studio_messages(&p).unwrap(), 2);
        assert!(l.locales().contains(&"fr_FR".to_string()));
        let p =
            l.parse("Pas le type d'activité que je cherche (p. ex. document, vidéo, etc.), Autre");
        assert_eq!(p.reasons, vec![NotSpecific, Other]);
        let bad = dir.path().join("x.json");
        std::fs::write(&bad, r#"{"a": "b"}"#).unwrap();
        assert!(matches!(
            l.add_studio_messages(&bad),
            Err(LabelsError::NoLabels { .. })
        ));
        std::fs::write(&bad, "not json").unwrap();
        assert!(matches!(
            l.add_studio_messages(&bad),
            Err(LabelsError::Json { .. })
        ));
    }
}
