# Sourced (". workspace/dotfiles/install.sh") from a node's home folder:
# links the profile into place, as a real dotfiles installer would.
ln -sf workspace/dotfiles/profile .profile
echo "dotfiles installed in $(pwd)"
