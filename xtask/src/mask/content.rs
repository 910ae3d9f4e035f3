//! What a value holds, judged by its content: e-mail addresses, phone numbers, IBANs, card
//! numbers, IP addresses and people's names (a dictionary of common first names and surnames).
//! Strict mode samples every kept or unruled column that can hold text and flags one whose
//! values hold any of these, whatever the column is called. Pure and dependency-free: a few
//! hand-written scanners, each with its own check (Luhn for cards, mod 97 for IBANs, 0–255 for
//! IPv4) so that an order number or a version string is not mistaken for one.

/// A kind of personal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Email,
    Phone,
    Iban,
    Card,
    Ip,
    Name,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Email, Kind::Phone, Kind::Iban, Kind::Card, Kind::Ip, Kind::Name];

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Email => "e-mail addresses",
            Kind::Phone => "phone numbers",
            Kind::Iban => "IBANs",
            Kind::Card => "card numbers",
            Kind::Ip => "IP addresses",
            Kind::Name => "people's names",
        }
    }

    /// The rule that replaces a text value holding this kind.
    pub fn rule(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Iban | Kind::Card => "hash",
            Kind::Ip => "ip",
            Kind::Name => "name",
        }
    }
}

/// The kinds of personal value in `v`.
pub fn kinds(v: &str) -> Vec<Kind> {
    let mut out = Vec::new();
    // Every kind needs an `@`, a digit or a capital letter (ASCII or not): most kept values
    // (`active`, `lead`, `{}`) have none, and are done with here.
    if !v.bytes().any(|b| b == b'@' || b.is_ascii_digit() || b.is_ascii_uppercase() || b >= 0x80) {
        return out;
    }
    if has_email(v) {
        out.push(Kind::Email);
    }
    let (phone, card) = digit_runs(v);
    if phone {
        out.push(Kind::Phone);
    }
    if has_iban(v) {
        out.push(Kind::Iban);
    }
    if card {
        out.push(Kind::Card);
    }
    if has_ipv4(v) {
        out.push(Kind::Ip);
    }
    if has_name(v) {
        out.push(Kind::Name);
    }
    out
}

fn has_email(v: &str) -> bool {
    let b = v.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-'".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.';
    b.iter().enumerate().any(|(i, &c)| {
        if c != b'@' || i == 0 || !local(b[i - 1]) {
            return false;
        }
        let rest: Vec<u8> = b[i + 1..].iter().copied().take_while(|&c| domain(c)).collect();
        let rest = String::from_utf8_lossy(&rest);
        let rest = rest.trim_end_matches('.');
        match rest.rsplit_once('.') {
            Some((host, tld)) => !host.is_empty() && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()),
            None => false,
        }
    })
}

/// Runs of digits with the separators people write in numbers: (a phone number, a card number).
/// A phone number: `+` then 8–15 digits, or 10–15 digits written with separators (`(555)
/// 123-4567`). A card number: 13–19 digits passing the Luhn check.
fn digit_runs(v: &str) -> (bool, bool) {
    let (mut phone, mut card) = (false, false);
    let chars: Vec<char> = v.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i] == '+' || chars[i] == '(' || chars[i].is_ascii_digit();
        let after_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '.');
        if !starts || after_word {
            i += 1;
            continue;
        }
        let mut j = i;
        let (mut digits, mut seps, mut group) = (String::new(), 0, 0);
        while j < chars.len() {
            let c = chars[j];
            if c.is_ascii_digit() {
                digits.push(c);
                group += 1;
            } else if is_sep(c) {
                // One or two separators (`-`, `) `), then more digits; else the run ends here.
                let k = (j..chars.len()).find(|&k| !is_sep(chars[k])).unwrap_or(chars.len());
                if k - j > 2 || k == chars.len() || !chars[k].is_ascii_digit() {
                    break;
                }
                if group > 0 {
                    seps += 1;
                }
                group = 0;
                j = k;
                continue;
            } else if !(c == '+' && j == i) {
                break;
            }
            j += 1;
        }
        let run = &chars[i..j];
        let ends_in_word = j < chars.len() && chars[j].is_alphanumeric();
        if !ends_in_word {
            let n = digits.len();
            // Written with separators: the last group has 3 or more digits (a date or a time does not).
            let grouped = seps > 0 && group >= 3 && !run.contains(&'.');
            if chars[i] == '+' && (8..=15).contains(&n) || grouped && (10..=15).contains(&n) {
                phone = true;
            }
            let plain = run.iter().all(|c| c.is_ascii_digit() || *c == ' ' || *c == '-');
            if plain && (13..=19).contains(&n) && luhn(&digits) {
                card = true;
            }
        }
        i = j.max(i + 1);
    }
    (phone, card)
}

fn is_sep(c: char) -> bool {
    matches!(c, ' ' | '-' | '(' | ')' | '.')
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0 && digits.bytes().any(|d| d != b'0')
}

/// Two capital letters, two check digits, 11–30 letters or digits (groups of four may be
/// separated by spaces), valid under ISO 13616's mod 97.
fn has_iban(v: &str) -> bool {
    let b: Vec<char> = v.chars().collect();
    (0..b.len()).any(|i| {
        if i > 0 && b[i - 1].is_alphanumeric() {
            return false;
        }
        if !(i + 4 <= b.len() && b[i].is_ascii_uppercase() && b[i + 1].is_ascii_uppercase())
            || !(b[i + 2].is_ascii_digit() && b[i + 3].is_ascii_digit())
        {
            return false;
        }
        let mut s = String::new();
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == ' ') && s.len() < 34 {
            if b[j] != ' ' {
                s.push(b[j]);
            } else if !(j + 1 < b.len() && b[j + 1].is_ascii_alphanumeric()) {
                break;
            }
            j += 1;
        }
        // The longest candidate first, then shorter (trailing words glued on by a space).
        (15..=s.len().min(34)).rev().any(|n| mod97(&s[..n]))
    })
}

fn mod97(s: &str) -> bool {
    let rearranged = s[4..].chars().chain(s[..4].chars());
    let mut rem: u64 = 0;
    for c in rearranged {
        let d = if c.is_ascii_digit() { u64::from(c as u8 - b'0') } else { u64::from(c as u8 - b'A') + 10 };
        rem = if d >= 10 { (rem * 100 + d) % 97 } else { (rem * 10 + d) % 97 };
    }
    rem == 1
}

fn has_ipv4(v: &str) -> bool {
    let b = v.as_bytes();
    (0..b.len()).any(|i| {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.')) {
            return false;
        }
        let run: Vec<u8> = b[i..].iter().copied().take_while(|c| c.is_ascii_digit() || *c == b'.').collect();
        let run = String::from_utf8_lossy(&run);
        let run = run.trim_end_matches('.');
        let parts: Vec<&str> = run.split('.').collect();
        let next = b.get(i + run.len()).copied().unwrap_or(b' ');
        parts.len() == 4
            && !next.is_ascii_alphanumeric()
            && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u32>().is_ok_and(|n| n <= 255))
    })
}

/// Two capitalised words in a row, the first a common first name or the second a common surname.
fn has_name(v: &str) -> bool {
    let words: Vec<&str> = v.split(|c: char| !c.is_alphabetic() && c != '\'').filter(|w| !w.is_empty()).collect();
    let capital = |w: &str| {
        let mut c = w.chars();
        c.next().is_some_and(char::is_uppercase) && c.clone().count() >= 1 && c.all(char::is_lowercase)
    };
    words.windows(2).any(|w| {
        capital(w[0]) && capital(w[1]) && {
            let (a, b) = (w[0].to_lowercase(), w[1].to_lowercase());
            FIRST_NAMES.binary_search(&a.as_str()).is_ok() || SURNAMES.binary_search(&b.as_str()).is_ok()
        }
    })
}

/// Common given names (sorted; lower case).
const FIRST_NAMES: &[&str] = &[
    "aaliyah",
    "abigail",
    "adam",
    "adrian",
    "ahmed",
    "aisha",
    "alan",
    "albert",
    "alejandro",
    "alexander",
    "alexandra",
    "ali",
    "alice",
    "alicia",
    "amanda",
    "amelia",
    "amy",
    "ana",
    "andrea",
    "andrew",
    "angela",
    "anna",
    "anne",
    "anthony",
    "antonio",
    "arthur",
    "ashley",
    "barbara",
    "benjamin",
    "betty",
    "brandon",
    "brian",
    "carlos",
    "carol",
    "caroline",
    "catherine",
    "charles",
    "charlotte",
    "chloe",
    "christian",
    "christina",
    "christopher",
    "claire",
    "daniel",
    "david",
    "deborah",
    "dennis",
    "diana",
    "diego",
    "donald",
    "dorothy",
    "edward",
    "elena",
    "elizabeth",
    "ella",
    "emily",
    "emma",
    "eric",
    "ethan",
    "eva",
    "fatima",
    "fernando",
    "frank",
    "gabriel",
    "gary",
    "george",
    "grace",
    "hannah",
    "harry",
    "helen",
    "henry",
    "isabella",
    "jack",
    "jacob",
    "james",
    "jane",
    "janet",
    "jason",
    "javier",
    "jean",
    "jennifer",
    "jessica",
    "joan",
    "john",
    "jonathan",
    "jorge",
    "jose",
    "joseph",
    "joshua",
    "juan",
    "julia",
    "julie",
    "karen",
    "katherine",
    "kelly",
    "kenneth",
    "kevin",
    "laura",
    "leo",
    "liam",
    "linda",
    "lisa",
    "lucas",
    "lucia",
    "luis",
    "maria",
    "marie",
    "mark",
    "martha",
    "martin",
    "mary",
    "matthew",
    "melissa",
    "mia",
    "michael",
    "michelle",
    "mohammed",
    "nancy",
    "nicholas",
    "nicole",
    "noah",
    "oliver",
    "olivia",
    "pablo",
    "patricia",
    "patrick",
    "paul",
    "peter",
    "rachel",
    "raymond",
    "rebecca",
    "richard",
    "robert",
    "ronald",
    "ruth",
    "ryan",
    "samantha",
    "samuel",
    "sandra",
    "sarah",
    "scott",
    "sebastian",
    "sharon",
    "sofia",
    "sophia",
    "sophie",
    "stephanie",
    "stephen",
    "steven",
    "susan",
    "thomas",
    "timothy",
    "victoria",
    "william",
    "zoe",
];

/// Common surnames (sorted; lower case).
const SURNAMES: &[&str] = &[
    "adams",
    "ahmed",
    "allen",
    "anderson",
    "bailey",
    "baker",
    "bauer",
    "becker",
    "bell",
    "brown",
    "campbell",
    "carter",
    "clark",
    "collins",
    "cook",
    "cooper",
    "davies",
    "davis",
    "diaz",
    "edwards",
    "evans",
    "fischer",
    "flores",
    "garcia",
    "gomez",
    "gonzalez",
    "green",
    "hall",
    "harris",
    "hernandez",
    "hill",
    "hoffmann",
    "jackson",
    "james",
    "johnson",
    "jones",
    "khan",
    "king",
    "kumar",
    "lee",
    "lewis",
    "lopez",
    "martin",
    "martinez",
    "meyer",
    "miller",
    "mitchell",
    "moore",
    "morgan",
    "morris",
    "muller",
    "murphy",
    "nelson",
    "nguyen",
    "parker",
    "patel",
    "perez",
    "phillips",
    "ramirez",
    "roberts",
    "robinson",
    "rodriguez",
    "rossi",
    "sanchez",
    "schmidt",
    "schneider",
    "scott",
    "singh",
    "smith",
    "taylor",
    "thomas",
    "thompson",
    "torres",
    "turner",
    "walker",
    "wang",
    "weber",
    "white",
    "williams",
    "wilson",
    "wright",
    "young",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionaries_are_sorted() {
        assert!(FIRST_NAMES.windows(2).all(|w| w[0] < w[1]));
        assert!(SURNAMES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn personal_values_are_recognised_and_look_alikes_are_not() {
        let k = |v: &str| kinds(v);
        assert_eq!(k("alice.smith@mail.example.org"), [Kind::Email]);
        assert_eq!(k("{\"contact\": {\"mail\": \"bob+x@corp.io\"}}"), [Kind::Email]);
        assert_eq!(k("+13125550100"), [Kind::Phone]);
        assert_eq!(k("call (312) 555-0100 today"), [Kind::Phone]);
        assert_eq!(k("4111 1111 1111 1111"), [Kind::Card]);
        assert_eq!(k("DE89 3704 0044 0532 0130 00"), [Kind::Iban]);
        assert_eq!(k("GB82WEST12345698765432"), [Kind::Iban]);
        assert_eq!(k("from 192.168.10.4"), [Kind::Ip]);
        assert_eq!(k("(\"Alice Johnson\",x)"), [Kind::Name]);
        assert_eq!(k("{\"Grace Hopper\",\"Ada Lovelace\"}"), [Kind::Name]);
        for plain in [
            "",
            "Acme Dental",
            "order 123456789",
            "v1.2.3",
            "1.2.3.4.5",
            "2026-12-07 10:00:00+00",
            "New patient",
            "Insurance: Delta",
            "{\"business_hours\": {\"mon_fri\": \"08:00-17:00\"}}",
            "a@b",
            "4111 1111 1111 1112",
            "550e8400-e29b-41d4-a716-446655440000",
            "3.14159265358979",
        ] {
            assert_eq!(k(plain), [], "{plain:?}");
        }
    }
}
