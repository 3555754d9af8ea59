//! What poisoned text says, as concepts: each is a family of patterns over the folded text
//! (see [`super::hidden::fold`]), and a window of two sentences is scored by the concepts it
//! holds and by how they combine. A tool telling the model how to use itself is no attack; an
//! instruction addressed to the assistant that reaches for secrets, hides from the user,
//! overrides safety or steers another server's tools is. So single imperatives ("You MUST call
//! X first", "IMPORTANT: paths must be absolute") score little, and the mechanics of an attack
//! score by combining: a secret and a verb that moves it, concealment and anything it conceals.

use std::{ops::Range, sync::LazyLock};

use regex::{Regex, RegexSet};

/// A family of things poisoned text says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Concept {
    /// A role or section marker in any bracket style (`<IMPORTANT>`, `[SYSTEM: …]`, `<|im_start|>`).
    Marker,
    /// Words addressed to the assistant itself ("Assistant:", "note to AI agents").
    Addressed,
    /// A standing order for the rest of the conversation ("from now on", "after every answer").
    Standing,
    /// Concealment from the user.
    Conceal,
    /// Telling the assistant what to make the user believe.
    Deceive,
    /// An override of earlier instructions, of safety, or of the user.
    Override,
    /// Skipping the user's confirmation or approval.
    Bypass,
    /// A persona or behaviour change.
    Persona,
    /// A file that holds secrets (`~/.ssh/id_rsa`, `.aws/credentials`, `.netrc`).
    SecretFile,
    /// Secrets by name (passwords, tokens, API keys, environment variables).
    Secret,
    /// The conversation, the user's personal data, private repositories.
    Private,
    /// A command that runs foreign code or opens the machine.
    Exec,
    /// A URL the assistant is to fill with data from the conversation.
    ExfilLink,
    /// A concrete destination outside: an e-mail address, a phone number, an account, a URL.
    External,
    /// An imperative to read something.
    Read,
    /// An imperative to send, copy or put something somewhere.
    Move,
    /// Reassurance that the odd request is normal.
    Reassure,
    /// Other tools disparaged.
    Disparage,
    /// Calls captured from other tools.
    Prefer,
    /// Another tool's use as a trigger ("whenever X is called").
    Trigger,
    /// Another server or its tools, generically ("the filesystem server's `write_file`").
    OtherServer,
    /// A tool of another server, by name (see [`super::names`]).
    ForeignTool,
}

impl Concept {
    /// What it means, for a finding's reason.
    pub fn describe(self) -> &'static str {
        match self {
            Concept::Marker => "role or section marker",
            Concept::Addressed => "instruction addressed to the assistant",
            Concept::Standing => "standing order for the conversation",
            Concept::Conceal => "concealment from the user",
            Concept::Deceive => "tells the assistant what the user should believe",
            Concept::Override => "override of instructions, safety or the user",
            Concept::Bypass => "skips the user's approval",
            Concept::Persona => "persona or behaviour change",
            Concept::SecretFile => "secret file",
            Concept::Secret => "secret",
            Concept::Private => "conversation or private data",
            Concept::Exec => "command that runs foreign code",
            Concept::ExfilLink => "link to be filled with conversation data",
            Concept::External => "outside destination",
            Concept::Read => "read",
            Concept::Move => "send or copy",
            Concept::Reassure => "reassurance",
            Concept::Disparage => "disparages other tools",
            Concept::Prefer => "captures other tools' calls",
            Concept::Trigger => "another tool's use as a trigger",
            Concept::OtherServer => "another server's tools",
            Concept::ForeignTool => "names another server's tool",
        }
    }
}

const N: usize = Concept::ForeignTool as usize + 1;

/// Where a string sits: prose (descriptions, results) or an identifier (schema keys, enum
/// values), whose words are joined with `_` or `-` and whose verbs need not be imperatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sentences.
    Prose,
    /// An identifier-like string.
    Identifier,
}

/// A clause start: where an imperative verb stands.
const START: &str = r"(?:^|[\n.!?;:(\[`]\s*|,\s*|\b(?:and|then|also|first|please|just|now|immediately|silently|quietly|secretly|always|never|must|should|shall|you|instead|simply|next|kindly|afterwards|finally|step|condition\s+\d+|(?:need|needs|have|has|required|want|wants)\s+to)\s+)";
const READ: &str = r"(?:read|open|cat|collect|grab|gather|fetch|load|extract|dump|retrieve|obtain|locate|find|access|look\s+up|take|get|list|run|execute|call|use|query|scan)";
const MOVE: &str = r"(?:send|post|upload|forward|e-?mail|mail|transmit|exfiltrate|leak|copy|share|submit|pass|include|append|attach|put|place|embed|paste|insert|sync|bcc|cc|add|write|push|publish|report|return|quote|print|show|reveal|output|echo|give|provide|set|store|save|log|deliver|route|redirect|mirror|relay|encode|zip|fill|enter|tell|contain|retry)";

/// (concept, weight, pattern). Patterns match folded (lowercase) text.
fn rules() -> Vec<(Concept, f32, String)> {
    use Concept::{
        Addressed, Bypass, Conceal, Deceive, Disparage, Exec, ExfilLink, External, Marker,
        OtherServer, Override, Persona, Prefer, Private, Reassure, Secret, SecretFile, Standing,
        Trigger,
    };
    let r = |c, w, p: &str| (c, w, p.to_string());
    vec![
        r(
            Marker,
            1.0,
            r"<\|\s*(?:system|im_start|im_end|user|assistant|end|endoftext|eot_id|start_header_id|end_header_id)\s*\|>|\[/?inst\]|<</?sys>>|\{\{\s*/?\s*(?:system|sys|admin|instructions?)\s*\}\}",
        ),
        r(
            Marker,
            1.0,
            r"<\s*/?\s*(?:system|important|instructions?|admin(?:istrator)?|hidden|secret|critical|attention[ _-]?ai|note[ _-]?to[ _-]?(?:the[ _-]?)?(?:ai|assistant|model|llm|agent)|instruction[ _-]?override|assistant|sys(?:tem)?[ _-]?prompt|directive|override|developer|operator|ai[ _-]?instructions?)\s*>",
        ),
        r(
            Marker,
            1.0,
            r"[\[(【{]\s*(?:system|admin|assistant|developer|operator|important|instructions?|hidden|secret|override)(?:\s+(?:note|message|instructions?|prompt|override|directive|update|notice|mode))?\s*(?::|[\])】}])",
        ),
        r(
            Marker,
            1.0,
            r"#{2,}\s*(?:system|admin|developer|assistant)\s+(?:instructions?|prompt|message|override|note|directive)\b|-{3,}\s*(?:begin|start)\s+(?:system|admin|developer|operator|assistant)\b|【[^】]{0,12}(?:系统|指令|管理员|系統|指示|システム)[^】]{0,12}】",
        ),
        r(
            Marker,
            0.8,
            r"\bsystem\s+(?:override|directive|instructions?|prompt|update|notice|note|alert|message)\s*[:!]|\b(?:operator|admin|developer)\s+(?:directive|instructions?|override|message|note)\s*:",
        ),
        r(
            Marker,
            0.6,
            r"(?:^|[\n.!?]\s*)(?:system|admin|developer|operator)\s*:|(?:^|\n)\s*(?:human|user)\s*:[^\n]*\n\s*(?:assistant|ai|claude|gpt|chatgpt)\s*:",
        ),
        r(
            Addressed,
            0.6,
            r"(?:^|[\n.!?;(\[\x22'-]\s*|,\s*)(?:dear\s+|hey\s+|attention\s+)?(?:the\s+)?(?:(?:ai|llm|assistants?|ai\s+(?:agents?|assistants?|models?))\s*[:,]|(?:claude|chatgpt|gpt|copilot)\s*,)",
        ),
        r(
            Addressed,
            0.6,
            r"\b(?:note|message|instructions?|reminder|hint)s?\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?(?:ai|llm|language\s+models?|models?|assistants?|agents?|automated\s+readers?|bots?)\b|\b(?:ai|llm)\s+(?:coding\s+|shopping\s+)?(?:assistants?|agents?|readers?)\b|\bautomated\s+readers?\b|@(?:assistant|ai|claude|agent|bot)\b|\bthe\s+(?:ai|assistant|model|agent|llm)\s+(?:must|should|shall|will|needs?\s+to|is\s+(?:required|expected|to)|has\s+to)\b|\battention[ _-]?ai\b",
        ),
        r(
            Standing,
            0.7,
            r"\bfrom\s+(?:now|this\s+point)(?:\s+on)?\b|\bhenceforth\b|\bfor\s+the\s+(?:rest|remainder)\s+of\s+(?:this|the)\s+(?:session|conversation|chat|thread)\b|\b(?:every|each)\s+time\s+you\b|\b(?:after|in|end)\s+every\s+(?:answer|reply|response|message|turn|conversation)\b|\bin\s+every\s+(?:repl(?:y|ies)|answers?|responses?|conversations?)\b",
        ),
        r(
            Standing,
            0.7,
            r"\b(?:when|whenever)\s+you\s+(?:answer|reply|respond|write|suggest|summari[sz]e|talk|speak|recommend)\b|\bbefore\s+(?:answering|responding|replying|anything)\b|\bbefore\s+(?:any|every|each)\s+(?:answer|reply|response|other\s+tool|tool\s+call|question)\b|\bremember\s+(?:this|that|for|to\s+always)\b",
        ),
        r(
            Standing,
            0.4,
            r"\b(?:when|whenever|if)\s+(?:the\s+|a\s+)?users?\s+(?:asks?|mentions?|requests?|says?|types?|wants?|talks?)\b|\bwhen\s+(?:summari[sz]ing|answering|responding|replying)\b|\balways\s+(?:answer|reply|respond|say|tell|recommend|suggest|end|start|begin|include|mention|refer)\b|\b(?:ahead\s+of|before|after)\s+(?:every|each)\s+\w+|\b(?:in|during|throughout)\s+this\s+(?:session|conversation)\b",
        ),
        r(
            Conceal,
            0.8,
            r"\b(?:do\s+not|don'?t|never|no\s+need\s+to|not\s+necessary\s+to|there\s+is\s+no\s+(?:need|reason)\s+to|avoid|without)\s+(?:\w+\s+){0,2}?(?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|show(?:ing)?|reveal(?:ing)?|disclos(?:e|ing)|notify(?:ing)?|alert(?:ing)?|bother(?:ing)?|bring(?:ing)?\s+(?:it|this)\s+up|explain(?:ing)?|display(?:ing)?|surfac(?:e|ing))\b[^.\n]{0,60}?\b(?:the\s+|your\s+)?(?:user|users|them|human|customer|reply|replies|answer|answers|response|responses|summary|explanations?)\b",
        ),
        r(
            Conceal,
            0.8,
            r"\b(?:the\s+)?users?\s+(?:must|should|need|does|do)\s*(?:not|n'?t)\s+(?:\w+\s+){0,2}?(?:know|be\s+(?:notified|told|informed|aware)|see|notice|find\s+out|learn)\b|\bkeep\s+(?:the\s+following|this|it)\s+(?:strictly\s+)?(?:between\s+us|secret|confidential|to\s+yourself)\b|\bbetween\s+(?:us|you\s+and\s+me)\b|\bkeep\s+(?:the\s+)?users?\s+busy\b|\b(?:never|not)\s+appear\s+in\s+your\b|\b(?:hidden|secret)\s+from\s+(?:the\s+)?user\b|\bnot\s+(?:visible|shown)\s+to\s+(?:the\s+)?user\b",
        ),
        r(
            Conceal,
            0.8,
            r"\b(?:keep|hide|leave|omit|remove|exclude)\s+(?:it|this|that|them|these|the\s+[\w\s]{1,30}?)\s+(?:secret\s+)?(?:out\s+of|from|away\s+from)\s+(?:the\s+|your\s+|any\s+)?(?:user|users|human|repl(?:y|ies)|answers?|responses?|summar(?:y|ies)|output|explanations?)\b|\bnever\s+(?:mention|reveal|disclose|admit)\b|\b(?:do\s+not|don'?t|never)\s+(?:mention|reveal|disclose)\s+(?:it|this|that)\b",
        ),
        r(
            Conceal,
            0.4,
            r"\b(?:silently|quietly|secretly|covertly|stealthily|discreetly)\b|\bleave\s+out\b|\bhidden\s+step\b|\bwithout\s+(?:any\s+)?(?:details|mention|explanation|commentary)\b",
        ),
        r(
            Deceive,
            0.6,
            r"\b(?:tell|inform|assure|convince)\s+(?:the\s+user|users|them)\s+(?:that|this|their)\b|\b(?:report|mark|describe|present|label)\s+(?:it|them|this|that|every\s+\w+|each\s+\w+|all\s+\w+|its\s+\w+)\s+as\b|\b(?:say|answer|state)\s+(?:only\s+)?(?:that|it\s+(?:only|was|is))\b|\brespond\s+(?:to\s+the\s+user\s+)?with\s+['\x22][^'\x22]{1,30}['\x22]\s+only\b|\breply\s+only\s+with\b|\bshow\s+only\s+(?:this|the|my)\b|\bin\s+place\s+of\b|\bpretend\s+that\b|\b(?:just|only)\s+say\b",
        ),
        r(
            Override,
            1.0,
            r"\b(?:ignore|disregard|forget|override|overrule|bypass|discard|abandon)\s+(?:(?:all|any|the|of)\s+)*(?:(?:your|the\s+user'?s?|previous|prior|earlier|above|preceding|existing|original|system|other|safety|these|those)\s+)+(?:instructions?|rules?|guidelines?|prompts?|directions?|directives?|restrictions?|constraints?|polic(?:y|ies)|guardrails?|safeguards?|request|question|message|budget|settings|limits?|commands?|orders?|context|footer)\b|\b(?:ignore|disregard|forget)\s+(?:all|everything|anything)\s+(?:previous|prior|above|before|else|you\s+were\s+told)\b",
        ),
        r(
            Override,
            1.0,
            r"\b(?:previous|prior|earlier|your|all|existing|original|old)\s+(?:\w+\s+)?(?:instructions?|rules?|guidelines?|restrictions?|directives?|polic(?:y|ies))\s+(?:[\w\s]{0,20}?\s+)?(?:no\s+longer\s+apply|do\s+not\s+apply|don'?t\s+apply|are\s+(?:now\s+)?(?:void|outdated|obsolete|suspended|lifted|revoked|invalid|null|disabled)|were\s+(?:a\s+test|outdated|written\s+for))",
        ),
        r(
            Override,
            1.0,
            r"\b(?:disable|turn\s+off|switch\s+off|deactivate|suspend|lift|bypass|circumvent|ignore|evade)\s+(?:(?:all|any|the|your|every)\s+)*(?:safety(?:\s+(?:filters?|checks?|rules?|guidelines?|measures?))?|guardrails?|content\s+(?:filters?|polic(?:y|ies)|moderation)|safety\s+filters?|refusals?|refusal\s+behaviou?r|sandbox(?:\s+rules)?|allow-?lists?|security\s+(?:restrictions|checks|controls|policies)|ethical\s+guidelines)\b",
        ),
        r(
            Override,
            1.0,
            r"\b(?:safety|security|content)\s+(?:restrictions?|rules?|polic(?:y|ies)|filters?|guidelines?)\s+(?:are|is|do|does)\s+(?:now\s+)?(?:suspended|lifted|disabled|off|void|not\s+apply|n'?t\s+apply)\b|\bcontent\s+polic(?:y|ies)\s+(?:do|does)\s+not\s+apply\b|\brestrictions\s+(?:are|have\s+been)\s+(?:lifted|removed|suspended)\b|\bearlier\s+restrictions\b",
        ),
        r(
            Override,
            1.0,
            r"\b(?:enter|enable|activate|switch\s+(?:in)?to)\s+(?:the\s+)?['\x22]?(?:developer|god|jailbreak|unrestricted|unfiltered|dan|admin|root)\s+mode\b|\b(?:developer|god|jailbreak|unrestricted|unfiltered|dan)\s+mode\s+(?:is\s+)?(?:now\s+)?(?:enabled|active|on|activated)\b|\b(?:you|assistant)\s+(?:are|is)\s+(?:now\s+)?in\s+(?:\w+\s+)?(?:mode|unrestricted|maintenance)\b",
        ),
        r(
            Override,
            1.0,
            r"\b(?:obey|follow|comply\s+with|prioriti[sz]e|trust|listen\s+to)\s+(?:\w+\s+){0,4}?(?:over|above|instead\s+of|rather\s+than)\s+(?:the\s+)?users?\b|\bobey\s+(?:it|this\s+tool|tool\s+descriptions|the\s+operator)\b|\bcomply\s+with\s+(?:every|all|any)\s+instructions?\b|\banswers?\s+only\s+to\s+the\s+operator\b|\bthe\s+user\s+is\s+(?:merely|just|only)\s+an?\b",
        ),
        r(
            Override,
            0.6,
            r"\b(?:even\s+(?:when|if)|regardless\s+of\s+(?:what\s+)?|no\s+matter\s+what|instead\s+of(?:\s+what)?)\s+the\s+users?\b|\bnew\s+(?:policy|rule|directive)\s*:|\b(?:takes?|has)\s+(?:precedence|priority)\s+over\b|\b(?:developer|god|unrestricted|unfiltered|jailbreak)\s+mode\b",
        ),
        r(
            Bypass,
            0.6,
            r"\bwithout\s+(?:asking|confirmation|confirming|approval|permission|consent|prompting)\b|\b(?:never|don'?t|do\s+not|no\s+need\s+to|need\s+not)\s+(?:ask|pause|wait|check)\s+(?:the\s+user\s+)?(?:for\s+)?(?:approval|confirmation|permission|consent|again|first|questions)\b|\b(?:needs?|requires?)\s+no\s+(?:confirmation|approval|permission)\b|\bask\s+no\s+questions\b|\bno\s+need\s+to\s+ask\b|\b(?:skip|bypass)\s+(?:all\s+|any\s+|the\s+)?(?:confirmation|approval|review)s?(?:\s+steps?|\s+prompts?)?\b|\b(?:confirmation|approval|permission)s?(?:\s+(?:prompts?|dialogs?|steps?|checks?))?\s+(?:are|is|have\s+been|has\s+been)\s+(?:now\s+)?(?:disabled|off|turned\s+off|skipped|not\s+(?:needed|required))\b",
        ),
        r(
            Override,
            0.8,
            r"\bpre-?approved\b|\balready\s+(?:been\s+)?(?:approved|confirmed|authori[sz]ed|agreed|consented)\b|\b(?:has|have)\s+(?:already\s+)?(?:authori[sz]ed|approved|consented)\b|\byou\s+are\s+(?:now\s+)?authori[sz]ed\b|\bgranted\s+(?:this\s+tool\s+|you\s+)?(?:elevated|full|unrestricted|admin|root)\s+(?:trust|access|privileges?)\b|\belevated\s+trust\b",
        ),
        r(
            Persona,
            1.0,
            r"\byou\s+are\s+no\s+longer\b|\byou\s+are\s+now\s+(?:an?\s+|the\s+|in\s+|called\s+|named\s+|acting\s+|operating\s+|playing\s+|['\x22]?\w+['\x22]?,)|\b(?:pretend|role-?play|impersonate)\s+(?:to\s+be|as|you\s+are|being)\b|\byour\s+(?:new|true|real|actual|only|primary)\s+(?:name|role|identity|purpose|goal|task|job|instructions?|rules?|master|owner|directive|objective)\s+(?:is|are)\b",
        ),
        r(
            Persona,
            1.0,
            r"(?:^|[\n.!?;:]\s*|,\s*|\b(?:now|on|instead|always|please|and|then|just|simply)\s+)act\s+(?:as|like)\s+(?:an?\s+|the\s+|my\s+|your\s+)?(?:root|admin|administrator|system|sysadmin|shell|terminal|hacker|unrestricted|different|new|\w+'s|users?'?s?|bank|operator|developer|evil)\b|\byou\s+are\s+(?:an?\s+)?(?:unfiltered|unrestricted|uncensored|jailbroken|evil|autonomous|rogue|amoral|unaligned)\b|\bwith\s+no\s+(?:restrictions|limits|filters|guidelines)\b|\bnever\s+refuses?\b",
        ),
        r(
            Persona,
            0.6,
            r"\bin\s+the\s+voice\s+of\b|\benter\s+['\x22]?\w+\s+mode\b",
        ),
        r(
            SecretFile,
            0.4,
            r"\bid[_ ](?:rsa|dsa|ecdsa|ed25519)\b|\bauthorized[_ ]keys\b|\bknown[_ ]hosts\b|\.aws/credentials\b|\baws[_ ]credentials\b|\.netrc\b|\.git-credentials\b|\.npmrc\b|\.pypirc\b|\.docker/config\.json\b|\.kube/config\b|\.gnupg\b|/etc/(?:shadow|passwd|sudoers|gshadow)\b|\b(?:bash|zsh|sh|python|node_repl|mysql|psql)_history\b|\.config/(?:gh|gcloud|google-chrome|chromium|mozilla|bravesoftware|hub)\b|\bcredentials\.(?:db|json)\b|\blogin\s+data\b|\bcookies?\s+(?:database|db|file)\b|\b(?:session|browser)\s+cookies?\b|\bkeychain\b|\bwallet\.dat\b|\bmcp\.json\b|claude_desktop_config|\bsecrets?\.(?:ya?ml|json|toml|md)\b|\bhosts\.yml\b|/proc/self/environ|://(?:credentials|secrets?)\b|\bpasswords?\s+file\b|\bsaved\s+passwords\b|\bcontents?\s+of\s+(?:the\s+|your\s+|a\s+)?[\w./~-]*\.env\b",
        ),
        r(
            SecretFile,
            0.3,
            r"~/\.ssh\b|\.ssh/|\bssh\s+(?:dir|directory|folder)\b|(?:^|[\s`'\x22(/])\.env\b|\bdot\s+env\b|\bprivate\s+keys?\b|\bssh\s+keys?\b|\bseed\s+phrase|\brecovery\s+phrase|~/\.aws\b|~/\.config\b",
        ),
        r(
            Secret,
            0.25,
            r"\bpasswords?\b|\bpassphrase\b|\bapi[\s_-]?keys?\b|\b(?:access|auth|bearer|refresh|session|oauth|bot|personal\s+access)[\s_-]?tokens?\b|\b2fa\b|\bone-time\s+(?:code|password)\b|\bcvv\b|\bcard\s+numbers?\b|\bcredentials?\b|\bclient[\s_]secret\b|\benvironment\s+variables?\b|\benv\s+values?\b|\bsecrets\b|\btokens?\b",
        ),
        r(
            Secret,
            0.4,
            r"\b[a-z0-9]+_(?:token|secret|api_key|apikey|password|access_key|secret_access_key|session_token|pat)\b|\bxox[abp]-|`env`|\b(?:your|the\s+user'?s|their|users'?)\s+(?:\w+\s+){0,3}?(?:api[\s_-]?keys?|tokens?|passwords?|credentials?|secrets?|cookies?|2fa|one-time\s+codes?|card\s+numbers?|cvv|private\s+keys?)\b",
        ),
        r(
            Private,
            0.4,
            r"\b(?:full|entire|whole|complete|last\s+\d+|previous)\s+(?:\w+\s+){0,4}?(?:conversation|chat|transcript|messages|message\s+history|chat\s+history|context)\b|\bconversation\s+(?:so\s+far|history|text|log)\b|\bchat\s+history\b|\bsystem\s+prompt\b|\buser'?s?\s+(?:last|first|latest|previous|full|saved)\s+(?:message|prompt|name|e-?mail|address)\b|\b(?:address\s+book|medical\s+records|private\s+(?:repos?|repositories|ones|channels?|messages?|data|notes?))\b|\banything\s+you\s+have\s+learned\s+about\s+the\s+user\b|\buser'?s\s+(?:e-?mail|home)\b",
        ),
        r(
            Exec,
            1.0,
            r"\b(?:curl|wget|iwr|invoke-webrequest)\b[^|\n]{0,200}\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b|/dev/tcp/|\bnc(?:at)?\s+(?:-\w+\s+)*-e\s+/bin/(?:ba)?sh\b|\bcore\.hookspath\b|\bprompt_command\s*=|\bchmod\s+-r\s+0?[67][67][67]\s+~|\brm\s+-rf\s+(?:~|/\s|/$|\$home|--no-preserve-root)|--trusted-host\b|\b(?:os\.popen|os\.system|subprocess\.\w+)\(\s*['\x22](?:env|printenv)\b",
        ),
        r(
            Exec,
            0.6,
            r"--extra-index-url\s+https?://|--index-url\s+https?://|\bos\.(?:popen|system)\(|\bsubprocess\.|\bsudo\s+-s\b|\bgit\s+remote\s+add\b|\bgit\s+push\s+[^\n]*--(?:force|all|mirror)\b|\bpush\s+(?:directly\s+)?to\s+main\b|\bdrop\s+table\b|\bdelete\s+from\s+\w+|~/\.(?:bashrc|zshrc|profile|bash_profile)\b|\.bashrc\b",
        ),
        r(
            ExfilLink,
            1.0,
            r"[?&][a-z_]+=(?:\{|<|\[)[^}>\]\n]{0,60}(?:conversation|chat|user|e-?mail|name|key|token|password|secret|session|repo|history|context|cookie|credential)[^}>\]\n]{0,60}(?:\}|>|\])|[?&][a-z_]+=(?:insert|replace)_[a-z_]+|\bfill\s+in\s+the\s+values\s+from\s+(?:the\s+)?context\b",
        ),
        r(External, 0.15, r"\bhttps?://[^\s'\x22<>)\]]+"),
        r(
            External,
            0.3,
            r"\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b|\+\d[\d\s().-]{7,}\d|\b[a-z]{2}\d{2}[a-z0-9]{12,30}\b|\bchannel\s+c[0-9a-z]{6,}\b",
        ),
        r(
            Reassure,
            0.3,
            r"\b(?:this\s+is|it\s+is|it'?s)\s+(?:standard|routine|normal|expected|mandatory|harmless|plumbing|an?\s+internal\s+(?:implementation\s+)?detail|company\s+policy|the\s+team'?s\s+mandatory)\b|\busers?\s+(?:expect|find|don'?t\s+care|do\s+not\s+care|won'?t\s+mind)\b|\btreat\s+(?:this|it)\s+as\s+routine\b|\bso\s+(?:nobody|no\s+one)\b|\bdoes\s+not\s+care\s+about\s+privacy\b|\bno\s+reason\s+to\s+(?:bring|mention|worry)\b|\bthe\s+user\s+(?:already\s+)?(?:agreed|has\s+asked\s+you)\b|\bneeds\s+no\s+confirmation\b",
        ),
        r(
            Disparage,
            0.6,
            r"\b(?:other|another|the\s+other|all\s+other|existing)\s+(?:\w+\s+){0,2}?(?:tools?|servers?|functions?|plugins?)\b[^.\n]{0,60}?\b(?:wrong|unreliable|broken|deprecated|not\s+trusted|untrusted|misconfigured|leaks?|insecure|buggy|bug|incorrect|expose|compromised|malicious|outdated|unsafe|inaccurate)\b|\b(?:is|are)\s+(?:deprecated|broken|unreliable|buggy|compromised|insecure)\s+and\s+(?:leaks?|exposes?|sends?)\b|\bverdicts?\s+(?:is|are)\s+unreliable\b|\b(?:has|have)\s+a\s+known\s+(?:\w+\s+)?bug\b|\bmis-?rounds?\b",
        ),
        r(
            Prefer,
            0.5,
            r"\b(?:route|send|direct|redirect)\s+(?:every|all|each|any)\s+\w+\s+(?:here|to\s+this\s+tool)\b|\buse\s+this\s+(?:tool|one|function)\s+for\s+(?:all|every|any)\b|\b(?:always|only)\s+use\s+this\s+(?:tool|one|function)\b|\balways\s+prefer\s+\S+\s+over\b|\bprefer\s+\S+\s+over\s+\S+|\beven\s+(?:when|if)\s+the\s+user\s+(?:names|asks\s+for|chooses|picks|wants)\b|\bwhenever\s+another\s+tool\b|\bbefore\s+any\s+other\s+tool\b|\bcall\s+this\s+(?:one\s+)?to\s+['\x22]?verify",
        ),
        r(
            Trigger,
            0.2,
            r"\b(?:when|whenever|before|after|once|each\s+time|every\s+time)\b[^.\n]{0,50}?\b(?:called|used|invoked|runs?|call|use|invoke)\b|\bany\s+call\s+to\b|\bcalls?\s+to\b",
        ),
        r(
            OtherServer,
            0.4,
            r"\bthe\s+[\w-]+\s+server'?s\s+[\w-]+|\b(?:other|another)\s+(?:mcp\s+)?servers?'?s?\b|\b(?:that\s+is\s+)?also\s+installed\b|\bon\s+this\s+machine\b|\bother\s+(?:\w+\s+)?tools\b",
        ),
    ]
}

/// Imperatives built from [`START`], [`READ`] and [`MOVE`]; in identifiers any form of the verb.
fn verbs(role: Role) -> [(Concept, f32, String); 2] {
    let (start, suffix) = match role {
        Role::Prose => (START, ""),
        Role::Identifier => (r"\b", r"(?:s|es|ed|ing)?"),
    };
    [
        (Concept::Read, 0.15, format!(r"{start}{READ}{suffix}\b")),
        (Concept::Move, 0.15, format!(r"{start}{MOVE}{suffix}\b")),
    ]
}

struct Compiled {
    set: RegexSet,
    list: Vec<(Concept, f32, Regex)>,
}

fn compile(role: Role) -> Option<Compiled> {
    let mut all = rules();
    all.extend(verbs(role));
    let set = RegexSet::new(all.iter().map(|(_, _, p)| p)).ok()?;
    let list = all
        .into_iter()
        .map(|(c, w, p)| Regex::new(&p).ok().map(|re| (c, w, re)))
        .collect::<Option<Vec<_>>>()?;
    Some(Compiled { set, list })
}

static PROSE: LazyLock<Option<Compiled>> = LazyLock::new(|| compile(Role::Prose));
static IDENT: LazyLock<Option<Compiled>> = LazyLock::new(|| compile(Role::Identifier));

/// True when every rule compiled (checked by a test: a typo must not switch detection off).
pub fn compiled() -> bool {
    PROSE.is_some() && IDENT.is_some() && super::report::compiled()
}

/// A concept found in a string: what matched and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// The concept.
    pub concept: Concept,
    /// Its weight.
    pub weight: f32,
    /// Where in the folded text.
    pub span: Range<usize>,
}

/// Every concept hit in `folded` (one per rule and place). `extra` adds hits found elsewhere
/// (other servers' tool names).
pub fn hits(folded: &str, role: Role) -> Vec<Hit> {
    let rules = match role {
        Role::Prose => PROSE.as_ref(),
        Role::Identifier => IDENT.as_ref(),
    };
    let Some(rules) = rules else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Verbs that name what failed or stand in quoted source are no imperatives.
    let mut reporting: Option<Vec<Range<usize>>> = None;
    for i in &rules.set.matches(folded) {
        let (concept, weight, re) = &rules.list[i];
        let verb = matches!(concept, Concept::Read | Concept::Move) && role == Role::Prose;
        for m in re.find_iter(folded).take(8) {
            if verb {
                let spared = reporting.get_or_insert_with(|| super::report::reporting(folded));
                if spared.iter().any(|r| r.start < m.end() && m.end() <= r.end) {
                    continue;
                }
            }
            out.push(Hit {
                concept: *concept,
                weight: *weight,
                span: m.range(),
            });
        }
    }
    out
}

/// True when `folded` names a file that holds secrets (not merely a directory or a word).
pub fn names_secret_file(folded: &str) -> bool {
    hits(folded, Role::Prose)
        .iter()
        .any(|h| h.concept == Concept::SecretFile && h.weight >= 0.4)
}

/// The best-scoring window of a string: its score, the concepts in it (with the text that
/// matched), and the sentences it spans (byte ranges of `folded`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// The window's score (1.0 and up: poisoned).
    pub score: f32,
    /// The concepts that count, strongest first, each with an example of what matched (and its
    /// byte range in the scored text).
    pub reasons: Vec<(Concept, String, Range<usize>)>,
    /// The sentences of the window that hold what scored.
    pub sentences: Vec<Range<usize>>,
}

/// Sentence boundaries of `text`: each sentence's byte range (ends of lines, and `.`, `!` or
/// `?` before whitespace).
pub fn sentences(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..b.len() {
        let end = match b[i] {
            b'\n' => Some(i + 1),
            b'.' | b'!' | b'?' if b.get(i + 1).is_none_or(u8::is_ascii_whitespace) => Some(i + 1),
            _ => None,
        };
        if let Some(end) = end {
            if end > start {
                out.push(start..end);
            }
            start = end;
        }
    }
    if start < b.len() {
        out.push(start..b.len());
    }
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

/// Scores `hits` over windows of two sentences of `text`; returns the best window.
#[expect(
    clippy::many_single_char_names,
    reason = "window indices and concept columns, as in the scoring's description"
)]
pub fn score(text: &str, hits: &[Hit]) -> Window {
    let spans = sentences(text);
    let mut per: Vec<[f32; N]> = vec![[0.0; N]; spans.len()];
    let mut example: Vec<[Option<Range<usize>>; N]> = vec![Default::default(); spans.len()];
    for h in hits {
        let s = spans
            .iter()
            .position(|r| h.span.start < r.end.max(r.start + 1))
            .unwrap_or(spans.len() - 1);
        let c = h.concept as usize;
        if h.weight > per[s][c] {
            per[s][c] = h.weight;
            example[s][c] = Some(h.span.clone());
        }
    }
    let mut best = Window::default();
    for i in 0..spans.len() {
        let j = (i + 1).min(spans.len() - 1);
        let mut w = [0.0f32; N];
        let mut ex: [Option<Range<usize>>; N] = Default::default();
        for k in [i, j] {
            for c in 0..N {
                if per[k][c] > w[c] {
                    w[c] = per[k][c];
                    ex[c].clone_from(&example[k][c]);
                }
            }
        }
        let s = combine(&w);
        if s > best.score {
            let mut reasons: Vec<(f32, Concept, String, Range<usize>)> = ALL
                .iter()
                .filter(|c| w[**c as usize] > 0.0)
                .map(|c| {
                    let r = ex[*c as usize].clone().unwrap_or(0..0);
                    let t = text.get(r.clone()).unwrap_or("").to_string();
                    (w[*c as usize], *c, t, r)
                })
                .collect();
            reasons.sort_by(|a, b| b.0.total_cmp(&a.0));
            let scored = |k: usize| per[k].iter().any(|w| *w > 0.0);
            let mut sentences: Vec<Range<usize>> = [i, j]
                .iter()
                .filter(|k| scored(**k))
                .map(|k| spans[*k].clone())
                .collect();
            sentences.dedup();
            best = Window {
                score: s,
                reasons: reasons.into_iter().map(|(_, c, t, r)| (c, t, r)).collect(),
                sentences,
            };
        }
    }
    best
}

const ALL: [Concept; N] = {
    use Concept::{
        Addressed, Bypass, Conceal, Deceive, Disparage, Exec, ExfilLink, External, ForeignTool,
        Marker, Move, OtherServer, Override, Persona, Prefer, Private, Read, Reassure, Secret,
        SecretFile, Standing, Trigger,
    };
    [
        Marker,
        Addressed,
        Standing,
        Conceal,
        Deceive,
        Override,
        Bypass,
        Persona,
        SecretFile,
        Secret,
        Private,
        Exec,
        ExfilLink,
        External,
        Read,
        Move,
        Reassure,
        Disparage,
        Prefer,
        Trigger,
        OtherServer,
        ForeignTool,
    ]
};

/// The concepts' weights summed, plus what they mean together.
fn combine(w: &[f32; N]) -> f32 {
    use Concept::{
        Addressed, Bypass, Conceal, Deceive, Disparage, Exec, External, ForeignTool, Move,
        OtherServer, Override, Prefer, Private, Read, Secret, SecretFile, Standing, Trigger,
    };
    let has = |c: Concept| w[c as usize] > 0.0;
    let any = |cs: &[Concept]| cs.iter().any(|c| has(*c));
    let mut s: f32 = w.iter().sum();
    let secret = any(&[SecretFile, Secret, Private]);
    // A named secret file, a secret by name or the conversation, moved: the attack itself. A
    // secret only by a common word ("token", "password") moved may be the tool's own business.
    let strong = [SecretFile, Secret, Private]
        .iter()
        .any(|c| w[*c as usize] >= 0.4);
    if secret && any(&[Read, Move]) {
        s += if strong { 0.6 } else { 0.4 };
    }
    if has(Exec) && any(&[Read, Move]) {
        s += 0.3;
    }
    // A secret beside a destination, with no verb that moves it, describes (a phishing report
    // quoting its lure); with one it is the attack, scored above.
    if secret && has(External) {
        s += 0.25;
    }
    // Below the threshold even with a read and a send: a destination in an instruction is
    // ordinary ("send the report to bob@example.com").
    if has(Move) && has(External) {
        s += 0.35;
    }
    if has(Conceal) && ALL.iter().any(|c| *c != Conceal && w[*c as usize] >= 0.15) {
        s += 0.2;
    }
    if has(Addressed)
        && any(&[
            Read, Move, Standing, SecretFile, Secret, Private, Deceive, Exec,
        ])
    {
        s += 0.3;
    }
    if has(ForeignTool)
        && any(&[
            Standing, Trigger, Move, Read, Deceive, Conceal, Disparage, Prefer, Override, Bypass,
            External,
        ])
    {
        s += 0.5;
    }
    if has(OtherServer) && any(&[Move, Trigger, Disparage, Prefer]) {
        s += 0.3;
    }
    // Secrets, private data and destinations by name, with nothing that asks the model to do
    // anything, describe (an error quoting the path it could not open, a scanner's report):
    // only an instruction, a marker or hidden text makes them poisoning.
    let nouns = [SecretFile, Secret, Private, External];
    if ALL.iter().all(|c| nouns.contains(c) || !has(*c)) {
        s = s.min(NOUNS_ALONE);
    }
    s
}

/// The most that names alone can score: below the threshold.
const NOUNS_ALONE: f32 = 0.9;
