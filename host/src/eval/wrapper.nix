# Evaluates a slice of a jobset's jobs for Orthrus (see eval/instantiate.rs).
#
# Next to this file the evaluator writes `inputs.nix` (the jobset's inputs
# as Nix values) and `deps.nix` (the latest successful build of every job of
# the jobset, for jobs that are functions of other jobs). `itemsFile` holds
# the attribute paths to evaluate, as JSON; the result is one entry per path:
#   { kind = "job"; ... }        a derivation, described as Orthrus records it
#   { kind = "attrs"; names; }   a nested attribute set, whose names are jobs too
#   { kind = "skip"; }           null, which Hydra ignores as well
#   { kind = "unsupported"; type; }
#
# Each entry is reported as soon as it is evaluated, as one line on stderr
# (`builtins.trace`): `trace: <marker><index>:<entry as JSON>`, so that the
# evaluator can follow the worker, watch its memory between jobs, and know
# which job an error belongs to (the one after the last reported).
#
# The jobs are those of the file `exprPath` (a legacy jobset), or of the flake
# `flakeUrl`, a locked reference: its `hydraJobs`, else its `checks`, as in Hydra.
{ exprPath ? null, flakeUrl ? null, itemsFile, marker }:

let
  inherit (builtins)
    attrNames concatStringsSep filter foldl' fromJSON functionArgs intersectAttrs
    isAttrs isFunction isInt isList isString listToAttrs readFile removeAttrs toJSON trace typeOf;

  inputs = import ./inputs.nix;
  jobDeps = import ./deps.nix;

  # Hydra's auto-calling: a function gets the arguments it names.
  callWith = f: args: f (intersectAttrs (functionArgs f) args);

  flakeJobs =
    let flake = builtins.getFlake flakeUrl;
    in flake.hydraJobs or flake.checks
      or (throw "the flake ${flakeUrl} has neither ‘hydraJobs’ nor ‘checks’ among its outputs");

  top = if flakeUrl != null then flakeJobs else import exprPath;
  root = if isFunction top then callWith top inputs else top;

  lookup = path: foldl' (value: name: value.${name}) root path;

  # The jobs a job function takes as arguments (inputs take precedence),
  # whether or not they have a successful build yet: when one appears, the
  # evaluator sees a changed input.
  depsUsedBy = f: attrNames (intersectAttrs (functionArgs f) (removeAttrs root (attrNames inputs)));

  stringOrNull = v: if isString v then v else null;
  intOrNull = v: if isInt v then v else null;

  # license and maintainers: a string, an attribute set or a list of them,
  # flattened to a comma-separated string as Hydra does.
  flatten = field: v:
    let
      one = x: if isString x then x else if isAttrs x then stringOrNull (x.${field} or null) else null;
      strings = filter isString (map one (if isList v then v else [ v ]));
    in if v == null || strings == [ ] then null else concatStringsSep ", " strings;

  constituent = c:
    if isString c then { name = c; }
    else if isAttrs c && c ? drvPath then { drvPath = c.drvPath; }
    else throw "a constituent must be a derivation or a job name, not a ${typeOf c}";

  describe = drv: usedDeps:
    let
      meta = if isAttrs (drv.meta or null) then drv.meta else { };
      aggregate = (drv._hydraAggregate or false) == true;
    in {
      kind = "job";
      nixName = drv.name;
      system = drv.system;
      drvPath = drv.drvPath;
      outputs = listToAttrs (map (o: { name = o; value = drv.${o}.outPath; }) (drv.outputs or [ "out" ]));
      description = stringOrNull (meta.description or null);
      license = flatten "shortName" (meta.license or null);
      homepage = stringOrNull (meta.homepage or null);
      maintainers = flatten "email" (meta.maintainers or null);
      schedulingPriority = intOrNull (meta.schedulingPriority or null);
      timeout = intOrNull (meta.timeout or null);
      maxSilent = intOrNull (meta.maxSilent or null);
      isChannel = (meta.isHydraChannel or meta.isChannel or false) == true;
      inherit aggregate usedDeps;
      constituents =
        if aggregate
        then map constituent (drv.constituents or (throw "aggregate job has no ‘constituents’ attribute"))
        else [ ];
      globConstituents = (drv._hydraGlobConstituents or false) == true;
    };

  evalItem = path:
    let
      found = lookup path;
      isJobFunction = isFunction found;
      value = if isJobFunction then callWith found (jobDeps // inputs) else found;
    in
      if isAttrs value && (value.type or null) == "derivation"
      then describe value (if isJobFunction then depsUsedBy found else [ ])
      else if isAttrs value
      then { kind = "attrs"; names = filter (n: n != "recurseForDerivations") (attrNames value); }
      else if value == null
      then { kind = "skip"; }
      else { kind = "unsupported"; type = typeOf value; };

  report = index: path: trace "${marker}${toString index}:${toJSON (evalItem path)}" (index + 1);

# The number of entries; the results are what was traced.
in foldl' report 0 (fromJSON (readFile itemsFile))
