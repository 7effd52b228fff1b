//! Chat formatting: a model's own chat template (Jinja, as Hugging Face's `tokenizer_config.json`
//! and llama.cpp's `tokenizer.chat_template` carry it), rendered with `minijinja` the way
//! `transformers`' `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, the
//! `messages` / `add_generation_prompt` / `bos_token` / `eos_token` variables and
//! `raise_exception`).
//!
//! Ember's prompts are text. An HH-RLHF transcript (`"\n\nHuman: … \n\nAssistant: … \n\nHuman: …
//! \n\nAssistant:"`) becomes alternating user/assistant turns ([`messages_from_prompt`]); any
//! other prompt is one user turn.
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A chat template and the special tokens it may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    pub bos_token: String,
    /// The end-of-turn token: what ends an answer.
    pub eos_token: String,
}

impl ChatTemplate {
    /// The template applied to `messages`; with `add_generation_prompt`, ends with the header
    /// of the assistant's turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| PolicyError::Tokenizer {
                context: "configuring the chat template syntax".into(),
                message: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let ctx = minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        env.render_str(&self.source, ctx)
            .map_err(|e| PolicyError::Tokenizer {
                context: "rendering the chat template".into(),
                message: format!("{e:#}"),
            })
    }

    /// Checks that the template renders a one-turn conversation.
    pub fn check(&self) -> Result<()> {
        self.render(&[Message::new("user", "hi")], true).map(|_| ())
    }
}

const TURNS: [(&str, &str); 2] = [("Human:", "user"), ("Assistant:", "assistant")];

/// The turns of an HH-RLHF style transcript (`Human:` / `Assistant:` after a blank line, or at
/// the very start), the final empty assistant turn dropped; any other text is one user turn.
pub fn messages_from_prompt(prompt: &str) -> Vec<Message> {
    // Byte offsets where a turn marker starts, with the role it opens.
    let mut marks: Vec<(usize, usize, &str)> = Vec::new(); // (marker start, content start, role)
    for (marker, role) in TURNS {
        for (i, _) in prompt.match_indices(marker) {
            let at_turn_start = i == 0 || prompt[..i].ends_with("\n\n");
            if at_turn_start {
                let start = if i >= 2 && prompt[..i].ends_with("\n\n") {
                    i - 2
                } else {
                    i
                };
                marks.push((start, i + marker.len(), role));
            }
        }
    }
    marks.sort_unstable();
    if marks.is_empty() || !prompt[..marks[0].0].trim().is_empty() {
        return vec![Message::new("user", prompt)];
    }
    let mut out: Vec<Message> = Vec::new();
    for (k, &(_, content_start, role)) in marks.iter().enumerate() {
        let end = marks.get(k + 1).map_or(prompt.len(), |m| m.0);
        let content = prompt[content_start..end].trim();
        match out.last_mut() {
            // Two turns of the same role in a row (HH has a few): one turn.
            Some(last) if last.role == role => {
                last.content.push_str("\n\n");
                last.content.push_str(content);
            }
            _ => out.push(Message::new(role, content)),
        }
    }
    if out
        .last()
        .is_some_and(|m| m.role == "assistant" && m.content.is_empty())
    {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn chatml() -> ChatTemplate {
        ChatTemplate {
            source: CHATML.into(),
            bos_token: "<|im_start|>".into(),
            eos_token: "<|im_end|>".into(),
        }
    }

    #[test]
    fn renders_chatml_with_a_generation_prompt() {
        let s = chatml()
            .render(&[Message::new("user", "Hi?")], true)
            .unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error_not_a_panic() {
        let t = ChatTemplate {
            source: "{{ raise_exception('no system role') }}".into(),
            ..chatml()
        };
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }

    #[test]
    fn hh_transcripts_become_turns() {
        let p = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant:";
        assert_eq!(
            messages_from_prompt(p),
            vec![
                Message::new("user", "What is 2+2?"),
                Message::new("assistant", "4."),
                Message::new("user", "And 3+3?"),
            ]
        );
        assert_eq!(
            messages_from_prompt("12+7="),
            vec![Message::new("user", "12+7=")]
        );
        // "Human:" inside a turn, not after a blank line, is text.
        let q = "Human: say \"Human: hi\"\n\nAssistant:";
        assert_eq!(
            messages_from_prompt(q),
            vec![Message::new("user", "say \"Human: hi\"")]
        );
    }
}
