# A reader for the YAML that mlwatch's own config files are written in, in
# plain builtins (no nixpkgs lib), so that the NixOS module can derive its
# scrape jobs, datasource and dashboard provider from prometheus/ and
# grafana/ at evaluation time instead of keeping copies of them.
#
# Supported: block mappings and sequences (including `- key: value` items),
# comments, single- and double-quoted scalars, integers, floats, booleans,
# null, `{}`, and flow sequences of scalars (`['a', "b"]`). Anything else
# (block scalars `|`/`>`, anchors, flow mappings) is not used by those files
# and makes evaluation fail rather than read wrongly.
#
# CI evaluates this reader with `nix-instantiate --eval` on every file the
# module reads and compares the result with PyYAML's (.ci/check_consistency.py),
# so a construct it does not understand cannot slip in unnoticed.
let
  inherit (builtins)
    elemAt
    filter
    fromJSON
    genList
    head
    isList
    length
    match
    split
    stringLength
    substring
    tail
    ;

  # Text before the first comment, outside quotes.
  stripComment = line:
    let
      go = acc: parts:
        if parts == [ ] then acc
        else
          let part = head parts; in
          if isList part then go (acc + head part) (tail parts)
          else
            let before = match "([^#]*)#.*" part; in
            if before == null then go (acc + part) (tail parts)
            else acc + head before;
    in
    go "" (split "('[^']*'|\"[^\"]*\")" line);

  rtrim = s: let m = match "(.*[^[:space:]])[[:space:]]*" s; in if m == null then "" else head m;
  ltrim = s: let m = match "[[:space:]]*(.*)" s; in head m;

  toLine = raw:
    let
      text = rtrim (stripComment raw);
      m = match "( *)(.*)" text;
    in
    { indent = stringLength (head m); text = elemAt m 1; };

  isItem = t: t == "-" || match "- .*" t != null;

  # "key: rest" -> { key; rest; }, or null when the text is not a mapping entry.
  splitKey = t:
    let m = match "([^:'\"[:space:]][^:'\"]*|'[^']*'|\"[^\"]*\"):( +(.*))?" t; in
    if m == null then null
    else {
      key = unquote (head m);
      rest = let r = elemAt m 2; in if r == null then "" else r;
    };

  unquote = s:
    if match "'.*'" s != null then substring 1 (stringLength s - 2) s
    else if match "\".*\"" s != null then fromJSON s
    else s;

  flowItems = inner:
    let m = match "[[:space:]]*('[^']*'|\"[^\"]*\"|[^,]*[^,[:space:]])[[:space:]]*(,(.*))?" inner; in
    if match "[[:space:]]*" inner != null then [ ]
    else if m == null then throw "yaml.nix: cannot read flow sequence item in `${inner}`"
    else [ (scalar (head m)) ] ++ (if elemAt m 2 == null then [ ] else flowItems (elemAt m 2));

  scalar = s:
    if match "'.*'" s != null || match "\".*\"" s != null then unquote s
    else if match "\\[(.*)]" s != null then flowItems (head (match "\\[(.*)]" s))
    else if s == "{}" then { }
    else if s == "true" then true
    else if s == "false" then false
    else if s == "null" || s == "~" then null
    else if match "-?[0-9]+(\\.[0-9]+)?" s != null then fromJSON s
    else if match "[|>&*!{].*" s != null then throw "yaml.nix: unsupported YAML construct `${s}`"
    else s;

  parse = text:
    let
      lines = filter (l: l.text != "") (map toLine (filter (x: !isList x) (split "\n" text)));
      n = length lines;
      at = ls: i: elemAt ls i;

      # The node that starts at line i, with that line's indentation.
      node = ls: i: if isItem (at ls i).text then sequence ls i (at ls i).indent else mapping ls i (at ls i).indent;

      # The value of a `key:` with nothing after it: a more indented block,
      # or a sequence at the key's own indentation.
      child = ls: j: indent: allowSameIndentSequence:
        if j < n && (at ls j).indent > indent then node ls j
        else if allowSameIndentSequence && j < n && (at ls j).indent == indent && isItem (at ls j).text
        then sequence ls j indent
        else { value = null; next = j; };

      sequence = ls: i: indent:
        let
          step = acc:
            if acc.next < n && (at ls acc.next).indent == indent && isItem (at ls acc.next).text
            then
              let r = item ls acc.next indent; in
              step { value = acc.value ++ [ r.value ]; inherit (r) next; }
            else acc;
        in
        step { value = [ ]; next = i; };

      item = ls: i: indent:
        let
          t = (at ls i).text;
          afterDash = if t == "-" then "" else substring 1 (stringLength t) t;
          rest = ltrim afterDash;
          column = indent + 1 + stringLength afterDash - stringLength rest;
        in
        if rest == "" then child ls (i + 1) indent false
        else if splitKey rest != null then
        # A mapping whose first key sits on the dash line: read it as if that
        # key started its own line at its column.
          let ls' = genList (k: if k == i then { indent = column; text = rest; } else at ls k) n; in
          mapping ls' i column
        else { value = scalar rest; next = i + 1; };

      mapping = ls: i: indent:
        let
          step = acc:
            if acc.next < n && (at ls acc.next).indent == indent && !isItem (at ls acc.next).text
            then
              let
                kv = splitKey (at ls acc.next).text;
                r =
                  if kv == null then throw "yaml.nix: expected `key: value`, found `${(at ls acc.next).text}`"
                  else if kv.rest == "" then child ls (acc.next + 1) indent true
                  else { value = scalar kv.rest; next = acc.next + 1; };
              in
              step { value = acc.value // { ${kv.key} = r.value; }; inherit (r) next; }
            else acc;
        in
        step { value = { }; next = i; };

      top = if n == 0 then { value = null; next = 0; } else node lines 0;
    in
    if top.next != n
    then throw "yaml.nix: cannot read line `${(at lines top.next).text}`"
    else top.value;
in
{
  inherit parse;
  readFile = path: parse (builtins.readFile path);
}
