# The demo jobset of `orthrus serve --demo`: a program, its test and a
# release gate that succeeds when both do. The builders use only the shell's
# built-in commands, so the demo builds on any Linux machine with Nix,
# sandboxed or not; they are never looked up in a binary cache.
{ officialRelease ? false }:

let
  system = builtins.currentSystem;
  version = if officialRelease then "1.0" else "1.0pre";
  shell = name: script: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" script ];
    allowSubstitutes = false;
    preferLocalBuild = true;
  };
in
rec {
  hello = shell "hello-${version}" ''
    echo "compiling hello ${version}"
    echo "linking"
    echo 'echo "Hello from the Orthrus demo"' > $out
  '';

  hello-test = shell "hello-test" ''
    echo "running the test suite against ${hello}"
    while read -r line; do
      case "$line" in
        *Hello*) echo "ok 1 - greets"; found=1 ;;
      esac
    done < ${hello}
    test -n "$found" || { echo "not ok 1 - does not greet"; exit 1; }
    echo "1..1" > $out
  '';

  release = (shell "release-gate" ''
    echo "all constituents built" > $out
  '') // {
    _hydraAggregate = true;
    constituents = [ hello hello-test ];
  };
}
