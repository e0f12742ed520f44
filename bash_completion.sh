# Bash completion for qpy, qpy-admin and qpy-access-multiuser.py.
#
# Enable it with `source /path/to/bash_completion.sh`, e.g. in ~/.bashrc.
# `qpy COMMAND ? <TAB><TAB>` (or `?<TAB><TAB>`) prints a short help and leaves the line
# as it is; `qpy ? <TAB><TAB>` lists the commands.
#
# GENERATED from the click commands by `python -m tools.completion`: do not edit by hand.
# tests/test_completion.py fails when this file differs from what the generator writes.

# --- helpers: each appends candidates for the word at the cursor ($cur) to COMPREPLY ---

__qpy_words() {  # WORDS: the words (one string, separated by spaces) that start with $cur
    local w
    for w in $1; do
        [[ $w == "$cur"* ]] && COMPREPLY+=("$w")
    done
    return 0
}

__qpy_files() {  # [-d]: files and directories, or directories only
    compopt -o filenames 2>/dev/null
    local f
    while IFS= read -r f; do
        COMPREPLY+=("$f")
    done < <(compgen "${1:--f}" -- "$cur" 2>/dev/null)
}

__qpy_dirs() {  # directories, but only once the word looks like a path
    if [[ $cur == [./~]* || $cur == */* ]]; then __qpy_files -d; fi
}

__qpy_command() {  # a command name, or a file once the word holds a slash
    if [[ $cur == */* ]]; then
        __qpy_files
        return
    fi
    local c
    while IFS= read -r c; do
        COMPREPLY+=("$c")
    done < <(compgen -c -- "$cur" 2>/dev/null | LC_ALL=C sort -u)
}

__qpy_users() {  # user names
    local u
    while IFS= read -r u; do
        COMPREPLY+=("$u")
    done < <(compgen -u -- "$cur" 2>/dev/null)
}

__qpy_nodes() {  # node names, from the nodes file in the admin home
    local file=${QPY_ADMIN_HOME:-$HOME/.qpy-multiuser}/nodes name rest
    [[ -r $file ]] || return 0
    while read -r name rest; do
        [[ -z $name || $name == \#* ]] && continue
        [[ $name == "$cur"* ]] && COMPREPLY+=("$name")
    done < "$file"
    return 0
}

__qpy_ids() {  # [STATUS...]: the user's job IDs (those with STATUS), not yet on the line
    [[ $cur == *[!0-9]* ]] && return 0
    local qpy=${COMP_WORDS[0]} id word ids
    [[ $qpy == */* && -x $qpy ]] || qpy=qpy
    ids=$("$qpy" _complete ids "$@" </dev/null 2>/dev/null) || return 0
    for id in $ids; do
        [[ $id == "$cur"* ]] || continue
        for word in "${args[@]}"; do
            [[ $word == "$id" ]] && continue 2
        done
        COMPREPLY+=("$id")
    done
    return 0
}

__qpy_say() {  # LINE...: print the lines, without a newline after the last one
    local IFS=$'\n'
    printf '%s' "$*"
}

__qpy_help() {  # PROG COMMAND [spaced]: the help for `?<TAB><TAB>` or `? <TAB><TAB>`,
    # keeping the line unchanged
    case ${COMP_TYPE:-}:${3:-} in
        63:* | 33:spaced | 64:spaced) ;;  # a listing: the help is printed
        *:spaced)
            # First TAB after `? `: two words with nothing in common insert nothing,
            # and the next TAB lists.
            COMPREPLY=('---' '')
            return 0
            ;;
        *)
            # First TAB on `?`: the word itself, so nothing changes and the next TAB lists.
            COMPREPLY=('?')
            compopt -o nospace 2>/dev/null
            return 0
            ;;
    esac
    printf '\n'
    "__qpy_help_$1" "$2" "${COMP_WORDS[0]##*/}"
    if [[ ${COMP_TYPE:-} == 63 ]]; then COMPREPLY=('---'); else COMPREPLY=('---' ''); fi
}

# --- the engine, shared by qpy and qpy-admin ---

__qpy_complete() {  # PROG: complete COMP_WORDS[COMP_CWORD] for program PROG
    local prog=$1 cur=${COMP_WORDS[COMP_CWORD]}
    local commands='' hidden='' opts='' valopts='' interspersed=''
    local cmd='' word='' valueof='' options_end='' n i=1
    local -a args=()
    COMPREPLY=()
    "__qpy_spec_$prog" ''
    while (( i < COMP_CWORD )); do
        if [[ ${COMP_WORDS[i]} != -* ]]; then
            cmd=${COMP_WORDS[i]}
            break
        fi
        (( i++ ))
    done
    [[ $cmd == '?' ]] && cmd=''  # `qpy ? <TAB><TAB>`: the overview
    if [[ $cur == '?' ]]; then
        __qpy_help "$prog" "$cmd"
        return 0
    fi
    if [[ -z $cur ]] && (( COMP_CWORD > 1 )) && [[ ${COMP_WORDS[COMP_CWORD-1]} == '?' ]]; then
        __qpy_help "$prog" "$cmd" spaced
        return 0
    fi
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            __qpy_words "$opts"
        elif [[ $cur == _* ]]; then
            __qpy_words "$commands $hidden"
        else
            __qpy_words "$commands"
        fi
        return 0
    fi
    "__qpy_spec_$prog" "$cmd" || return 0
    for (( i++; i < COMP_CWORD; i++ )); do
        word=${COMP_WORDS[i]}
        if [[ -z $options_end && $word == -?* ]]; then
            if [[ $word == -- ]]; then
                options_end=1
            elif [[ " $valopts " == *" $word "* ]]; then
                # the value follows; bash splits --opt=value into --opt, =, value
                if (( i + 2 < COMP_CWORD )) && [[ ${COMP_WORDS[i+1]} == = ]]; then (( i++ )); fi
                if (( i + 1 == COMP_CWORD )); then valueof=$word; fi
                (( i++ ))
            fi
            continue
        fi
        args+=("$word")
        [[ -n $interspersed ]] || options_end=1
    done
    if [[ -n $valueof ]]; then
        [[ $cur == = ]] && cur=''
        "__qpy_value_$prog" "$cmd" "$valueof"
        return 0
    fi
    if [[ -z $options_end && $cur == -* ]]; then
        __qpy_words "$opts"
        return 0
    fi
    n=${#args[@]}
    "__qpy_args_$prog" "$cmd"
    return 0
}


# --- qpy: generated from the click commands ---

__qpy_spec_qpy() {  # COMMAND ('' for the group): set the words to offer
    case $1 in
        '')
            commands='sub check why kill hold release clean requeue wait log history connect status config ctrlQueue notes restart finish join tutorial'
            hidden=''
            opts='-h --help'
            ;;
        'sub')
            opts='-n --cores -m --mem --memory -a --node_attr --attributes -c --copyScript -o --originalScript --requeue -t --time --mail --exclusive -N --nodes --after --afterok --priority --array --file --json -h --help'
            valopts='-n --cores -m --mem --memory -a --node_attr --attributes -t --time --mail -N --nodes --after --afterok --priority --array --file'
            interspersed=''
            ;;
        'check')
            opts='--json -h --help'
            valopts=''
            interspersed=1
            ;;
        'why')
            opts='--json -h --help'
            valopts=''
            interspersed=1
            ;;
        'kill')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'hold')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'release')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'clean')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'requeue')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'wait')
            opts='--timeout -h --help'
            valopts='--timeout'
            interspersed=1
            ;;
        'log')
            opts='--err -n --lines -f --follow -h --help'
            valopts='-n --lines'
            interspersed=1
            ;;
        'history')
            opts='--since --until --json -h --help'
            valopts='--since --until'
            interspersed=1
            ;;
        'connect')
            opts='-n --cores -m --mem --memory -a --node_attr --attributes --name --new --detach -l --list --json --gui --gui-attach -h --help'
            valopts='-n --cores -m --mem --memory -a --node_attr --attributes --name --gui-attach'
            interspersed=''
            ;;
        'status')
            opts='--json -h --help'
            valopts=''
            interspersed=1
            ;;
        'config')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'ctrlQueue')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'notes')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'restart')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'finish')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'join')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'tutorial')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        *)
            return 1
            ;;
    esac
}

__qpy_args_qpy() {  # COMMAND: complete its argument number $n
    case $1 in
        'sub')
            if (( n == 0 )); then __qpy_command; else __qpy_files; fi
            ;;
        'check')
            __qpy_words 'queue running done killed undone lost held'
            __qpy_ids
            __qpy_dirs
            ;;
        'why')
            if (( n == 0 )); then __qpy_ids queue; fi
            ;;
        'kill')
            __qpy_words 'queue running held all'
            __qpy_ids queue running
            __qpy_dirs
            ;;
        'hold')
            __qpy_words 'queue all'
            __qpy_ids queue
            __qpy_dirs
            ;;
        'release')
            __qpy_words 'held queue all'
            __qpy_ids queue
            __qpy_dirs
            ;;
        'clean')
            __qpy_words 'done killed undone lost all'
            __qpy_ids done killed undone lost
            __qpy_dirs
            ;;
        'requeue')
            __qpy_words 'done killed undone lost all'
            __qpy_ids done killed undone lost
            __qpy_dirs
            ;;
        'wait')
            __qpy_words 'queue running done killed undone lost held all'
            __qpy_ids
            __qpy_dirs
            ;;
        'log')
            if (( n == 0 )); then __qpy_ids; fi
            ;;
        'history')
            __qpy_words 'running done killed lost all'
            __qpy_ids
            __qpy_dirs
            ;;
        'connect')
            if [[ " ${COMP_WORDS[*]:0:COMP_CWORD} " == *' --gui '* ]]; then
                if (( n == 0 )); then __qpy_command; else __qpy_files; fi
            elif (( n == 0 )); then __qpy_ids queue running; fi
            ;;
        'status')
            :
            ;;
        'config')
            if (( n == 0 )); then __qpy_words 'checkFMT copyScripts colour coloursScheme defaultAttr andAttr orAttr killGrace sourceTheseFiles notify'; else
                case ${args[0]} in
                checkFMT)
                    if (( n == 1 )); then __qpy_words default; fi
                    ;;
                copyScripts|colour)
                    if (( n == 1 )); then __qpy_words 'true false'; fi
                    ;;
                coloursScheme)
                    if (( n <= 6 )); then __qpy_words 'grey red green yellow blue magenta cyan white'; fi
                    ;;
                defaultAttr|andAttr|orAttr)
                    if (( n == 1 )); then __qpy_words none; fi
                    ;;
                killGrace)
                    :
                    ;;
                sourceTheseFiles)
                    __qpy_files
                    if (( n == 1 )); then __qpy_words none; fi
                    ;;
                notify)
                    if (( n == 1 )); then __qpy_command; __qpy_words none; fi
                    ;;
                esac
            fi
            ;;
        'ctrlQueue')
            if (( n == 0 )); then __qpy_words 'pause continue jump'
            elif [[ ${args[0]} == jump ]]; then
                __qpy_ids queue
                if (( n >= 2 )); then __qpy_words 'begin end'; fi
            fi
            ;;
        'notes')
            if (( n == 0 )); then __qpy_ids; fi
            ;;
        'restart')
            :
            ;;
        'finish')
            :
            ;;
        'join')
            :  # the enrolment code: nothing to offer
            ;;
        'tutorial')
            if (( n == 0 )); then __qpy_words 'sub check why kill hold release clean requeue wait log history connect status config ctrlQueue notes restart finish join tutorial checkFMT copyScripts colour coloursScheme defaultAttr andAttr orAttr killGrace sourceTheseFiles notify'; fi
            ;;
    esac
    return 0
}

__qpy_value_qpy() {  # COMMAND OPTION: complete the option's value
    case $1 in
        'sub')
            case $2 in
                --mail) __qpy_words 'end fail end,fail none' ;;
                --after) __qpy_ids ;;
                --afterok) __qpy_ids ;;
                --priority) __qpy_words 'low normal high' ;;
                --file) __qpy_files ;;
            esac
            ;;
        'connect')
            case $2 in
                --gui-attach) __qpy_ids running ;;
            esac
            ;;
    esac
    return 0
}

__qpy_help_qpy() {  # COMMAND NAME: print the help, NAME being the program
    case $1 in
        '')
            __qpy_say 'qpy: submit and control jobs on a cluster'\''s nodes (see '\''qpy tutorial'\'').' \
                'usage: '"$2"' COMMAND [ARGS]...' \
                '  sub        Submit COMMAND as a job.' \
                '  check      List jobs: all, or those matching statuses, IDs, ranges...' \
                '  why        Say why queued job JOB has not started yet, or where a...' \
                '  kill       Kill jobs: IDs, ranges, '\''queue'\'', '\''running'\'' or '\''all'\''.' \
                '  hold       Keep queued jobs from starting: IDs, ranges, '\''queue'\'',...' \
                '  release    Let held jobs start: IDs, ranges, '\''held'\'', '\''queue'\'',...' \
                '  clean      Forget finished jobs: IDs, ranges, done, killed, undone,...' \
                '  requeue    Run finished jobs again under the same IDs: IDs, ranges,...' \
                '  wait       Wait until jobs have ended; print each that did not end...' \
                '  log        Print a job'\''s output; with -f, follow it until the job ends.' \
                '  history    List every run of every job, cleaned ones too: times,...' \
                '  connect    Open a tmux session on a node and attach to it, or attach...' \
                '  status     Show users, nodes and cores of the multiuser.' \
                '  config     Show the settings, or set KEY to VALUES.' \
                '  ctrlQueue  Pause or continue the queue, or jump jobs to run after...' \
                '  notes      List jobs with notes, show a job'\''s notes, or add TEXT as...' \
                '  restart    Stop the master if it runs and start a new one; running...' \
                '  finish     Stop the master, and the personal multiuser if no master...' \
                '  join       Fetch your key for the cluster with the enrolment code...' \
                '  tutorial   Show the manual, at the first place KEYWORD appears.' \
                'Help on one command: '"$2"' COMMAND ? <TAB><TAB>'
            ;;
        'sub')
            __qpy_say 'sub: Submit COMMAND as a job. Options go before the command.' \
                'usage: '"$2"' sub [OPTIONS] [COMMAND]...' \
                '  -n, --cores N                   Number of cores (default 1).' \
                '  -m, --mem, --memory GB          Memory in GB (default 5).' \
                '  -a, --node_attr, --attributes EXPR' \
                '                                  Node attributes: names with and/or/not and' \
                '                                  parentheses.' \
                '  -c, --copyScript                Run a copy of the script taken now.' \
                '  -o, --originalScript            Run the original script even if copyScripts' \
                '                                  is on.' \
                '  --requeue                       Queue the job again if its node fails while' \
                '                                  it runs (else: lost).' \
                '  -t, --time TIME                 Wall-time limit: M, M:S, H:M:S, D-H, D-H:M,' \
                '                                  D-H:M:S; 0 or UNLIMITED: none.' \
                '  --mail WHEN                     Mail me at the job'\''s end: end, fail or' \
                '                                  end,fail (through sendmail).' \
                '  --exclusive                     Take a whole node: all its cores and memory,' \
                '                                  no other job beside.' \
                '  -N, --nodes K                   Take K whole nodes; the command runs on the' \
                '                                  first, with QPY_NODES and QPY_NODEFILE.' \
                '  --after IDS                     Start once the jobs IDS (e.g. 5, 3-7,9) have' \
                '                                  ended.' \
                '  --afterok IDS                   Start once the jobs IDS have ended done with' \
                '                                  exit 0; if one does not, this job is undone.' \
                '  --priority N                    An integer, or low, normal, high (-10, 0,' \
                '                                  10): goes after the last queued job of equal' \
                '                                  or higher priority (default 0).' \
                '  --array FIRST-LAST[:STEP][%MAX]' \
                '                                  One job per index, with QPY_ARRAY_INDEX and' \
                '                                  QPY_ARRAY_JOB_ID; at most MAX of them run at' \
                '                                  once.' \
                '  --file FILE                     One job per line of FILE ('\''-'\'': standard' \
                '                                  input); the options given here are every' \
                '                                  line'\''s defaults.' \
                '  --json                          Print the new jobs'\'' records as JSON.' \
                'More: '"$2"' sub --help; qpy tutorial '\''sub'\'
            ;;
        'check')
            __qpy_say 'check: List jobs: all, or those matching statuses, IDs, ranges or directories.' \
                'usage: '"$2"' check [OPTIONS] [JOBS]...' \
                '  --json  Print the records as JSON.' \
                'More: '"$2"' check --help; qpy tutorial '\''check'\'
            ;;
        'why')
            __qpy_say 'why: Say why queued job JOB has not started yet, or where a job is.' \
                'usage: '"$2"' why [OPTIONS] JOB' \
                '  --json  Print the reason as JSON.' \
                'More: '"$2"' why --help; qpy tutorial '\''why'\'
            ;;
        'kill')
            __qpy_say 'kill: Kill jobs: IDs, ranges, '\''queue'\'', '\''running'\'' or '\''all'\''.' \
                'usage: '"$2"' kill [OPTIONS] [JOBS]...' \
                'More: '"$2"' kill --help; qpy tutorial '\''kill'\'
            ;;
        'hold')
            __qpy_say 'hold: Keep queued jobs from starting: IDs, ranges, '\''queue'\'', directories or '\''all'\''.' \
                'usage: '"$2"' hold [OPTIONS] [JOBS]...' \
                'More: '"$2"' hold --help; qpy tutorial '\''hold'\'
            ;;
        'release')
            __qpy_say 'release: Let held jobs start: IDs, ranges, '\''held'\'', '\''queue'\'', directories or '\''all'\''.' \
                'usage: '"$2"' release [OPTIONS] [JOBS]...' \
                'More: '"$2"' release --help; qpy tutorial '\''release'\'
            ;;
        'clean')
            __qpy_say 'clean: Forget finished jobs: IDs, ranges, done, killed, undone, lost, directories or '\''all'\''.' \
                'usage: '"$2"' clean [OPTIONS] [JOBS]...' \
                'More: '"$2"' clean --help; qpy tutorial '\''clean'\'
            ;;
        'requeue')
            __qpy_say 'requeue: Run finished jobs again under the same IDs: IDs, ranges, done, killed, undone, lost, directories or '\''all'\''.' \
                'usage: '"$2"' requeue [OPTIONS] [JOBS]...' \
                'More: '"$2"' requeue --help; qpy tutorial '\''requeue'\'
            ;;
        'wait')
            __qpy_say 'wait: Wait until jobs have ended; print each that did not end done with exit 0.' \
                'usage: '"$2"' wait [OPTIONS] [JOBS]...' \
                '  --timeout S  Give up after S seconds (exit status 2); the jobs go on.' \
                'More: '"$2"' wait --help; qpy tutorial '\''wait'\'
            ;;
        'log')
            __qpy_say 'log: Print a job'\''s output; with -f, follow it until the job ends.' \
                'usage: '"$2"' log [OPTIONS] JOB' \
                '  --err          Standard error (job_ID.err) instead.' \
                '  -n, --lines N  Only the last N lines.' \
                '  -f, --follow   Follow the output as it is written until the job ends.' \
                'More: '"$2"' log --help; qpy tutorial '\''log'\'
            ;;
        'history')
            __qpy_say 'history: List every run of every job, cleaned ones too: times, node, resources, exit, usage.' \
                'usage: '"$2"' history [OPTIONS] [JOBS]...' \
                '  --since WHEN  Runs that ended at or after WHEN: an ISO date or time, or a' \
                '                span back from now (2h, 3d).' \
                '  --until WHEN  Runs that started at or before WHEN.' \
                '  --json        Print the runs as JSON.' \
                'More: '"$2"' history --help; qpy tutorial '\''history'\'
            ;;
        'connect')
            __qpy_say 'connect: Open a tmux session on a node and attach to it, or attach to one you have.' \
                'usage: '"$2"' connect [OPTIONS] [ID|NAME]' \
                '  -n, --cores N                   Cores of a new session (default 1).' \
                '  -m, --mem, --memory GB          Memory of a new session in GB (default 5).' \
                '  -a, --node_attr, --attributes EXPR' \
                '                                  Node attributes of a new session: names with' \
                '                                  and/or/not and parentheses.' \
                '  --name NAME                     The session named NAME: attach, or make it.' \
                '  --new                           Make a new session even if you have one.' \
                '  --detach                        Make a new session without attaching; print' \
                '                                  its job ID.' \
                '  -l, --list                      List your sessions.' \
                '  --json                          With -l: the sessions as JSON.' \
                '  --gui                           Run PROGRAM [ARGS]... (the arguments) under' \
                '                                  xpra on a node and show it.' \
                '  --gui-attach ID                 Show the GUI of session ID here (xpra' \
                '                                  attach).' \
                'More: '"$2"' connect --help; qpy tutorial '\''connect'\'
            ;;
        'status')
            __qpy_say 'status: Show users, nodes and cores of the multiuser.' \
                'usage: '"$2"' status [OPTIONS]' \
                '  --json  Print the status as JSON.' \
                'More: '"$2"' status --help; qpy tutorial '\''status'\'
            ;;
        'config')
            __qpy_say 'config: Show the settings, or set KEY to VALUES.' \
                'usage: '"$2"' config [OPTIONS] [KEY] [VALUES]...' \
                'More: '"$2"' config --help; qpy tutorial '\''config'\'
            ;;
        'ctrlQueue')
            __qpy_say 'ctrlQueue: Pause or continue the queue, or jump jobs to run after TARGET (ID, begin, end).' \
                'usage: '"$2"' ctrlQueue [OPTIONS] {pause|continue|jump} [ARGS]...' \
                'More: '"$2"' ctrlQueue --help; qpy tutorial '\''ctrlQueue'\'
            ;;
        'notes')
            __qpy_say 'notes: List jobs with notes, show a job'\''s notes, or add TEXT as a note.' \
                'usage: '"$2"' notes [OPTIONS] [JOB] [TEXT]...' \
                'More: '"$2"' notes --help; qpy tutorial '\''notes'\'
            ;;
        'restart')
            __qpy_say 'restart: Stop the master if it runs and start a new one; running jobs are kept.' \
                'usage: '"$2"' restart [OPTIONS]' \
                'More: '"$2"' restart --help; qpy tutorial '\''restart'\'
            ;;
        'finish')
            __qpy_say 'finish: Stop the master, and the personal multiuser if no master uses it; running jobs go on and are found again at the next start.' \
                'usage: '"$2"' finish [OPTIONS]' \
                'More: '"$2"' finish --help; qpy tutorial '\''finish'\'
            ;;
        'join')
            __qpy_say 'join: Fetch your key for the cluster with the enrolment code your qpy admin gave you.' \
                'usage: '"$2"' join [OPTIONS] CODE' \
                'More: '"$2"' join --help; qpy tutorial '\''join'\'
            ;;
        'tutorial')
            __qpy_say 'tutorial: Show the manual, at the first place KEYWORD appears.' \
                'usage: '"$2"' tutorial [OPTIONS] [KEYWORD]' \
                'More: '"$2"' tutorial --help; qpy tutorial '\''tutorial'\'
            ;;
        *)
            __qpy_say "$2"': no command '\'"$1"\' \
                '  sub        Submit COMMAND as a job.' \
                '  check      List jobs: all, or those matching statuses, IDs, ranges...' \
                '  why        Say why queued job JOB has not started yet, or where a...' \
                '  kill       Kill jobs: IDs, ranges, '\''queue'\'', '\''running'\'' or '\''all'\''.' \
                '  hold       Keep queued jobs from starting: IDs, ranges, '\''queue'\'',...' \
                '  release    Let held jobs start: IDs, ranges, '\''held'\'', '\''queue'\'',...' \
                '  clean      Forget finished jobs: IDs, ranges, done, killed, undone,...' \
                '  requeue    Run finished jobs again under the same IDs: IDs, ranges,...' \
                '  wait       Wait until jobs have ended; print each that did not end...' \
                '  log        Print a job'\''s output; with -f, follow it until the job ends.' \
                '  history    List every run of every job, cleaned ones too: times,...' \
                '  connect    Open a tmux session on a node and attach to it, or attach...' \
                '  status     Show users, nodes and cores of the multiuser.' \
                '  config     Show the settings, or set KEY to VALUES.' \
                '  ctrlQueue  Pause or continue the queue, or jump jobs to run after...' \
                '  notes      List jobs with notes, show a job'\''s notes, or add TEXT as...' \
                '  restart    Stop the master if it runs and start a new one; running...' \
                '  finish     Stop the master, and the personal multiuser if no master...' \
                '  join       Fetch your key for the cluster with the enrolment code...' \
                '  tutorial   Show the manual, at the first place KEYWORD appears.' \
                'Help on one command: '"$2"' COMMAND ? <TAB><TAB>'
            ;;
    esac
}

# --- qpy-admin: generated from the click commands ---

__qpy_spec_admin() {  # COMMAND ('' for the group): set the words to offer
    case $1 in
        '')
            commands='adduser distribute drain finish log nodes removeuser resume saveMessages start status variables'
            hidden='__remove_job __req_core __user'
            opts='-h --help'
            ;;
        '__remove_job')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        '__req_core')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        '__user')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'adduser')
            opts='--valid --out -h --help'
            valopts='--valid --out'
            interspersed=1
            ;;
        'distribute')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'drain')
            opts='--reason -h --help'
            valopts='--reason'
            interspersed=1
            ;;
        'finish')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'log')
            opts='-n --lines -f --follow -h --help'
            valopts='-n --lines'
            interspersed=1
            ;;
        'nodes')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'removeuser')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'resume')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'saveMessages')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'start')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'status')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        'variables')
            opts='-h --help'
            valopts=''
            interspersed=1
            ;;
        *)
            return 1
            ;;
    esac
}

__qpy_args_admin() {  # COMMAND: complete its argument number $n
    case $1 in
        '__remove_job')
            if (( n == 0 )); then __qpy_users; fi
            ;;
        '__req_core')
            if (( n == 0 )); then __qpy_users; fi
            ;;
        '__user')
            if (( n == 0 )); then __qpy_users; fi
            ;;
        'adduser')
            if (( n == 0 )); then __qpy_users; fi
            ;;
        'distribute')
            :
            ;;
        'drain')
            __qpy_nodes
            ;;
        'finish')
            :
            ;;
        'log')
            :
            ;;
        'nodes')
            :
            ;;
        'removeuser')
            if (( n == 0 )); then __qpy_users; fi
            ;;
        'resume')
            __qpy_nodes
            ;;
        'saveMessages')
            if (( n == 0 )); then __qpy_words 'true false'; fi
            ;;
        'start')
            :
            ;;
        'status')
            :
            ;;
        'variables')
            :
            ;;
    esac
    return 0
}

__qpy_value_admin() {  # COMMAND OPTION: complete the option's value
    case $1 in
        'adduser')
            case $2 in
                --out) __qpy_files -d ;;
            esac
            ;;
    esac
    return 0
}

__qpy_help_admin() {  # COMMAND NAME: print the help, NAME being the program
    case $1 in
        '')
            __qpy_say "$2"': Administer the qpy multiuser (needs the admin key).' \
                'usage: '"$2"' COMMAND [ARGS]...' \
                '  adduser       Allow USER and print a one-time enrolment code for '\''qpy...' \
                '  distribute    Reload allowed_users and distribution_rules; reshare.' \
                '  drain         Start no new job on NODES; running jobs finish there.' \
                '  finish        Stop the multiuser (running jobs go on); returns when it...' \
                '  log           Show the multiuser'\''s log (multiuser.log in the admin home).' \
                '  nodes         Reload the nodes file.' \
                '  removeuser    Withdraw USER'\''s access; their key stops working at once.' \
                '  resume        Let NODES take new jobs again after a drain.' \
                '  saveMessages  Keep debugging messages (shown by '\''variables'\'').' \
                '  start         Start the multiuser in the background.' \
                '  status        Show users, nodes and cores.' \
                '  variables     Show the multiuser'\''s internal state.' \
                'Help on one command: '"$2"' COMMAND ? <TAB><TAB>'
            ;;
        '__remove_job')
            __qpy_say '__remove_job: a repair command for the allocator'\''s bookkeeping; see the manual first.' \
                'usage: '"$2"' __remove_job [OPTIONS] [ARGS]...' \
                'More: '"$2"' __remove_job --help; qpy tutorial '\''repair commands'\'
            ;;
        '__req_core')
            __qpy_say '__req_core: a repair command for the allocator'\''s bookkeeping; see the manual first.' \
                'usage: '"$2"' __req_core [OPTIONS] [ARGS]...' \
                'More: '"$2"' __req_core --help; qpy tutorial '\''repair commands'\'
            ;;
        '__user')
            __qpy_say '__user: a repair command for the allocator'\''s bookkeeping; see the manual first.' \
                'usage: '"$2"' __user [OPTIONS] [ARGS]...' \
                'More: '"$2"' __user --help; qpy tutorial '\''repair commands'\'
            ;;
        'adduser')
            __qpy_say 'adduser: Allow USER and print a one-time enrolment code for '\''qpy join'\''.' \
                'usage: '"$2"' adduser [OPTIONS] USER' \
                '  --valid TEXT  How long the enrolment code works (s, m, h or d).  [default:' \
                '                24h]' \
                '  --out TEXT    Write the key bundle into this directory instead of printing a' \
                '                code.' \
                'More: '"$2"' adduser --help; qpy tutorial '\''qpy-admin adduser'\'
            ;;
        'distribute')
            __qpy_say 'distribute: Reload allowed_users and distribution_rules; reshare.' \
                'usage: '"$2"' distribute [OPTIONS]' \
                'More: '"$2"' distribute --help; qpy tutorial '\''qpy-admin distribute'\'
            ;;
        'drain')
            __qpy_say 'drain: Start no new job on NODES; running jobs finish there.' \
                'usage: '"$2"' drain [OPTIONS] NODES...' \
                '  --reason TEXT  Why (shown by qpy status).' \
                'More: '"$2"' drain --help; qpy tutorial '\''qpy-admin drain'\'
            ;;
        'finish')
            __qpy_say 'finish: Stop the multiuser (running jobs go on); returns when it has exited.' \
                'usage: '"$2"' finish [OPTIONS]' \
                'More: '"$2"' finish --help; qpy tutorial '\''qpy-admin finish'\'
            ;;
        'log')
            __qpy_say 'log: Show the multiuser'\''s log (multiuser.log in the admin home).' \
                'usage: '"$2"' log [OPTIONS]' \
                '  -n, --lines N  Only the last N lines.  [x>=0]' \
                '  -f, --follow   Go on printing lines as they come.' \
                'More: '"$2"' log --help; qpy tutorial '\''qpy-admin log'\'
            ;;
        'nodes')
            __qpy_say 'nodes: Reload the nodes file.' \
                'usage: '"$2"' nodes [OPTIONS]' \
                'More: '"$2"' nodes --help; qpy tutorial '\''qpy-admin nodes'\'
            ;;
        'removeuser')
            __qpy_say 'removeuser: Withdraw USER'\''s access; their key stops working at once.' \
                'usage: '"$2"' removeuser [OPTIONS] USER' \
                'More: '"$2"' removeuser --help; qpy tutorial '\''qpy-admin removeuser'\'
            ;;
        'resume')
            __qpy_say 'resume: Let NODES take new jobs again after a drain.' \
                'usage: '"$2"' resume [OPTIONS] NODES...' \
                'More: '"$2"' resume --help; qpy tutorial '\''qpy-admin resume'\'
            ;;
        'saveMessages')
            __qpy_say 'saveMessages: Keep debugging messages (shown by '\''variables'\'').' \
                'usage: '"$2"' saveMessages [OPTIONS] {true|false}' \
                'More: '"$2"' saveMessages --help; qpy tutorial '\''qpy-admin saveMessages'\'
            ;;
        'start')
            __qpy_say 'start: Start the multiuser in the background.' \
                'usage: '"$2"' start [OPTIONS]' \
                'More: '"$2"' start --help; qpy tutorial '\''qpy-admin start'\'
            ;;
        'status')
            __qpy_say 'status: Show users, nodes and cores.' \
                'usage: '"$2"' status [OPTIONS]' \
                'More: '"$2"' status --help; qpy tutorial '\''qpy-admin status'\'
            ;;
        'variables')
            __qpy_say 'variables: Show the multiuser'\''s internal state.' \
                'usage: '"$2"' variables [OPTIONS]' \
                'More: '"$2"' variables --help; qpy tutorial '\''qpy-admin variables'\'
            ;;
        *)
            __qpy_say "$2"': no command '\'"$1"\' \
                '  adduser       Allow USER and print a one-time enrolment code for '\''qpy...' \
                '  distribute    Reload allowed_users and distribution_rules; reshare.' \
                '  drain         Start no new job on NODES; running jobs finish there.' \
                '  finish        Stop the multiuser (running jobs go on); returns when it...' \
                '  log           Show the multiuser'\''s log (multiuser.log in the admin home).' \
                '  nodes         Reload the nodes file.' \
                '  removeuser    Withdraw USER'\''s access; their key stops working at once.' \
                '  resume        Let NODES take new jobs again after a drain.' \
                '  saveMessages  Keep debugging messages (shown by '\''variables'\'').' \
                '  start         Start the multiuser in the background.' \
                '  status        Show users, nodes and cores.' \
                '  variables     Show the multiuser'\''s internal state.' \
                'Help on one command: '"$2"' COMMAND ? <TAB><TAB>'
            ;;
    esac
}

_qpy() { __qpy_complete qpy; }
_qpy_admin() { __qpy_complete admin; }
complete -F _qpy qpy
complete -F _qpy_admin qpy-admin qpy-access-multiuser.py
