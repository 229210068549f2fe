// GitHub's runner reading a job's output, as its source reads (`ActionCommand.TryParseV2`,
// then `ActionCommand.TryParse`, on each line of `StreamReader.ReadLine`), with .NET's
// culture-aware comparison modelled by skipping default-ignorable characters. The runner
// (.NET) cannot run here, so this model stands in for it; the tests of the renderer and of
// the binary share it (`include!`d by the unit tests).

/// A workflow command the runner would run: (name, properties, data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCommand {
    pub name: String,
    pub properties: String,
    pub data: String,
}

/// The commands GitHub's runner registers, matched case-insensitively.
const RUNNER_COMMANDS: &[&str] = &[
    "add-mask",
    "add-matcher",
    "add-path",
    "debug",
    "echo",
    "endgroup",
    "error",
    "group",
    "notice",
    "remove-matcher",
    "save-state",
    "set-env",
    "set-output",
    "stop-commands",
    "warning",
    "internal-set-repo-path",
];

/// What a culture-aware comparison skips: controls, and Unicode's default-ignorable code
/// points (Default_Ignorable_Code_Point, DerivedCoreProperties.txt).
fn skipped_by_culture(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(u32::from(c),
            0xAD | 0x34F | 0x61C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
            | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF)
}

/// Every command GitHub's runner would take from `output`.
pub fn runner_commands(output: &str) -> Vec<RunnerCommand> {
    let registered = |name: &str| RUNNER_COMMANDS.iter().any(|r| r.eq_ignore_ascii_case(name));
    let mut found = Vec::new();
    // ReadLine ends a line at \n, \r\n or a lone \r.
    for line in output.split(['\n', '\r']) {
        let seen: String = line.chars().filter(|c| !skipped_by_culture(*c)).collect();
        // v2: `::name props::data` after TrimStart (Char.IsWhiteSpace).
        let trimmed = seen.trim_start_matches(char::is_whitespace);
        if let Some(rest) = trimmed.strip_prefix("::")
            && let Some(end) = rest.find("::")
        {
            let info = &rest[..end];
            let (name, properties) = info.split_once(' ').unwrap_or((info, ""));
            if registered(name) {
                found.push(RunnerCommand {
                    name: name.to_ascii_lowercase(),
                    properties: properties.to_string(),
                    data: rest[end + 2..].to_string(),
                });
                continue;
            }
        }
        // The older form: `##[name props]data` anywhere in the line.
        if let Some(start) = seen.find("##[")
            && let Some(end) = seen[start..].find(']')
        {
            let info = &seen[start + 3..start + end];
            let (name, properties) = info.split_once(' ').unwrap_or((info, ""));
            if registered(name) {
                found.push(RunnerCommand {
                    name: name.to_ascii_lowercase(),
                    properties: properties.to_string(),
                    data: seen[start + end + 1..].to_string(),
                });
            }
        }
    }
    found
}
